from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from sites.fields import EncryptedTextField
from sites.naming import SiteNames


class InvalidTransition(Exception):
    """A state change that the model's life cycle does not allow."""


def _new_db_password() -> str:
    return secrets.token_urlsafe(24)


class Site(models.Model):
    class Status(models.TextChoices):
        PROVISIONING = "PROVISIONING", "Provisioning"
        ACTIVE = "ACTIVE", "Active"
        DEPROVISIONING = "DEPROVISIONING", "Deprovisioning"

    name = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROVISIONING, db_index=True)
    domain = models.CharField(max_length=255)
    # Random per site, never derived from the name; never shown anywhere;
    # stored encrypted (sites.fields), never queried.
    db_password = EncryptedTextField(default=_new_db_password, editable=False)
    # The job that holds the site (PENDING, PROCESSING, or FAILED awaiting a
    # retry). Set and cleared with conditional UPDATEs: at most one job per
    # site runs at a time.
    current_job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    # The newest job of any status, so lists show it without a query per row.
    last_job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    # The last drift the reconciler found and repaired (kept as a record), and
    # whether its latest check found any.
    drift = models.TextField(blank=True, editable=False)
    drifted = models.BooleanField(default=False, editable=False, db_index=True)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set while the reconciler repairs the site: no job may open meanwhile, so
    # a repair never rebuilds what a concurrent deprovision just removed.
    repairing_since = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Never filtered, ordered or searched on, in the admin or anywhere else.
    secret_fields = frozenset({"db_password"})

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def names(self) -> SiteNames:
        return SiteNames(self.name)

    @property
    def url(self) -> str:
        # https in production (TLS is terminated in front of Caddy); the lab has none.
        return f"{settings.WPFLEET_SITE_URL_SCHEME}://{self.domain}/"

    @property
    def is_zombie(self) -> bool:
        """sites.zombies.zombie_sites() for one row in memory: stuck, its last job failed for good."""
        job = self.last_job
        return (
            self.status in (self.Status.PROVISIONING, self.Status.DEPROVISIONING)
            and self.current_job_id is None
            and job is not None
            and job.status == job.Status.FAILED
            and job.next_attempt_at is None
        )

    def secrets(self) -> list[str]:
        """Every secret text that could reach an error about this site; redacted before display."""
        return known_secrets() + [self.db_password]


    def _move(self, allowed: tuple[str, ...], target: str) -> None:
        """Change status only from an allowed state, re-checked in the UPDATE itself."""
        if self.status not in allowed:
            raise InvalidTransition(f"site {self.name}: {self.status} -> {target} is not allowed")
        changed = Site.objects.filter(pk=self.pk, status__in=allowed).update(status=target, updated_at=timezone.now())
        if changed != 1:
            raise InvalidTransition(f"site {self.name}: status changed concurrently, {target} refused")
        self.status = target

    def mark_active(self) -> None:
        self._move((self.Status.PROVISIONING, self.Status.ACTIVE), self.Status.ACTIVE)


def known_secrets() -> list[str]:
    """Secrets of the panel itself that must never be shown."""
    return [settings.WPFLEET_DB_ADMIN["password"], settings.SECRET_KEY]
