"""Throttled admin login: a password cannot be guessed at the admin's speed.

Two limits, each over a sliding ``WPFLEET_LOGIN_WINDOW_SECONDS``:

* ``WPFLEET_LOGIN_FAILURES`` failed logins for one user name from one client
  address: past it, that address's attempts on that name are refused without
  checking the password. Another address may still log in with that name, so
  nobody can lock an operator out from elsewhere.
* ``WPFLEET_LOGIN_ADDRESS_FAILURES`` (default four times the first) failed
  logins from one client address, whatever the names: spraying many user
  names from one address is as slow as guessing one.

The client address is resolved as the API's throttles resolve it (DRF's
``get_ident`` with ``REST_FRAMEWORK["NUM_PROXIES"]``): behind the TLS proxy,
the address the proxy appended to X-Forwarded-For, not the proxy's own
address (which every client would share) nor one the client wrote.

Counting is atomic. Each limit is a row of ``limit`` slots in the shared
cache (the control database, so every gunicorn worker sees them); an attempt
takes a free slot with ``cache.add`` (an INSERT on the cache table's unique
key: of two workers racing for one slot, one gets it) *before* its password
is checked, and gives it back if the login succeeds. With no free slot the
attempt is refused, so however many attempts arrive at once, at most
``limit`` passwords are checked per window; each slot frees itself
``window`` seconds after it was taken. The one bound left is the database
cache's own: on MariaDB, two ``add`` calls racing for a slot whose previous
entry has expired but not yet been removed can both succeed (an UPDATE, not
an INSERT), so at most one extra attempt per such slot per racing worker.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError
from rest_framework.throttling import BaseThrottle


def client_address(request: Any) -> str:
    """The client's address, resolved exactly as the API's throttles resolve it."""
    if request is None:
        return ""
    return BaseThrottle().get_ident(request) or ""


def address_limit() -> int:
    return int(settings.WPFLEET_LOGIN_ADDRESS_FAILURES)


class Slots:
    """At most ``limit`` attempts in a sliding window, counted without a read-then-write."""

    def __init__(self, scope: str, ident: str, limit: int, window: int) -> None:
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        self.keys = [f"wpfleet:login:{scope}:{digest}:{slot}" for slot in range(limit)]
        self.window = window

    def take(self) -> str | None:
        """The key of a slot taken for this attempt, or None when every slot is taken."""
        taken = cache.get_many(self.keys)  # also removes the expired ones
        for key in self.keys:
            if key not in taken and cache.add(key, 1, timeout=self.window):
                return key
        return None


def limits(request: Any, username: str) -> tuple[Slots, Slots]:
    """The per-(address, user name) and per-address limits of one attempt."""
    address = client_address(request)
    window = settings.WPFLEET_LOGIN_WINDOW_SECONDS
    return (
        Slots("user", f"{address}\0{username.strip().lower()}", settings.WPFLEET_LOGIN_FAILURES, window),
        Slots("address", address, address_limit(), window),
    )


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed logins. Try again in %(minutes)s minutes.",
    }

    def clean(self) -> dict[str, Any]:
        taken: list[str] = []
        for slots in limits(self.request, self.cleaned_data.get("username") or ""):
            key = slots.take()
            if key is None:
                cache.delete_many(taken)  # refused before any password was checked: not a failure
                raise ValidationError(
                    self.error_messages["throttled"],
                    code="throttled",
                    params={"minutes": max(1, settings.WPFLEET_LOGIN_WINDOW_SECONDS // 60)},
                )
            taken.append(key)
        cleaned = super().clean()  # a failed login raises here, and keeps its slots
        cache.delete_many(taken)
        return cleaned
