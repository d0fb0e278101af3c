"""Throttled admin login: a password cannot be guessed at the admin's speed.

After ``WPFLEET_LOGIN_FAILURES`` failed logins for one user name from one
client address within ``WPFLEET_LOGIN_WINDOW_SECONDS``, further attempts are
refused without checking the password until the window passes. Counters
live in the shared cache (the control database), so every gunicorn worker
sees the same count.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError


def _key(request: Any, username: str) -> str:
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    digest = hashlib.sha256(f"{address}\0{username.strip().lower()}".encode()).hexdigest()[:32]
    return f"wpfleet:login-failures:{digest}"


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed logins. Try again in %(minutes)s minutes.",
    }

    def clean(self) -> dict[str, Any]:
        key = _key(self.request, self.cleaned_data.get("username") or "")
        window = settings.WPFLEET_LOGIN_WINDOW_SECONDS
        if (cache.get(key) or 0) >= settings.WPFLEET_LOGIN_FAILURES:
            raise ValidationError(
                self.error_messages["throttled"], code="throttled", params={"minutes": max(1, window // 60)}
            )
        try:
            return super().clean()
        except ValidationError:
            if not cache.add(key, 1, timeout=window):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.add(key, 1, timeout=window)
            raise
