from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from sites.models import InvalidTransition


class Job(models.Model):
    class Type(models.TextChoices):
        PROVISION = "PROVISION", "Provision"
        DEPROVISION = "DEPROVISION", "Deprovision"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        PROCESSING = "PROCESSING", "Processing"
        DONE = "DONE", "Done"
        FAILED = "FAILED", "Failed"

    # SET_NULL and a copy of the name: a site's job history outlives it.
    site = models.ForeignKey("sites.Site", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    site_name = models.CharField(max_length=32, db_index=True)
    type = models.CharField(max_length=16, choices=Type.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # For people: one line saying what went wrong. The traceback is kept apart.
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    # Tracebacks name code paths, hosts and values: never filtered or
    # searched on (a lookup such as traceback__contains is an oracle).
    secret_fields = frozenset({"traceback"})
    # FAILED with a next attempt time: a retry is due. FAILED without: final.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The worker running the job renews its lease; an expired lease means the
    # worker died and the reaper takes the job over.
    worker = models.CharField(max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.get_type_display()} {self.site_name} #{self.pk}"

    # --- derived ----------------------------------------------------------

    @property
    def is_final(self) -> bool:
        return self.status == self.Status.DONE or (self.status == self.Status.FAILED and self.next_attempt_at is None)

    @property
    def duration(self) -> dt.timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    # --- transitions --------------------------------------------------------
    # Each is a conditional UPDATE that must change exactly one row: two
    # workers (or a redelivered task) can never both move the same job.

    @classmethod
    def claim(cls, job_id: int, worker: str) -> Job | None:
        """Take a runnable job (PENDING, or FAILED with a retry due); None if there is none."""
        now = timezone.now()
        runnable = Q(status=cls.Status.PENDING) | Q(
            status=cls.Status.FAILED, next_attempt_at__isnull=False, next_attempt_at__lte=now
        )
        changed = (
            cls.objects.filter(runnable, pk=job_id, attempts__lt=F("max_attempts"))
            .update(
                status=cls.Status.PROCESSING,
                attempts=F("attempts") + 1,
                worker=worker,
                lease_expires_at=now + dt.timedelta(seconds=settings.WPFLEET_LEASE_SECONDS),
                started_at=now,
                finished_at=None,
                next_attempt_at=None,
                updated_at=now,
            )
        )
        if changed != 1:
            return None
        return cls.objects.select_related("site").get(pk=job_id)

    @classmethod
    def take_over(cls, job_id: int, worker: str) -> Job | None:
        """Take a PROCESSING job whose worker's lease has expired (the worker died)."""
        now = timezone.now()
        changed = cls.objects.filter(pk=job_id, status=cls.Status.PROCESSING, lease_expires_at__lt=now).update(
            worker=worker,
            lease_expires_at=now + dt.timedelta(seconds=settings.WPFLEET_LEASE_SECONDS),
            updated_at=now,
        )
        if changed != 1:
            return None
        return cls.objects.select_related("site").get(pk=job_id)

    def renew_lease(self) -> bool:
        now = timezone.now()
        expires = now + dt.timedelta(seconds=settings.WPFLEET_LEASE_SECONDS)
        changed = Job.objects.filter(pk=self.pk, status=self.Status.PROCESSING, worker=self.worker).update(
            lease_expires_at=expires
        )
        if changed == 1:
            self.lease_expires_at = expires
        return changed == 1

    def _finish(self, status: str, **fields) -> None:
        if self.status != self.Status.PROCESSING:
            raise InvalidTransition(f"job {self.pk}: {self.status} -> {status} is not allowed")
        now = timezone.now()
        fields.update(status=status, finished_at=now, lease_expires_at=None, updated_at=now)
        changed = Job.objects.filter(pk=self.pk, status=self.Status.PROCESSING, worker=self.worker).update(**fields)
        if changed != 1:
            raise InvalidTransition(f"job {self.pk}: no longer held by {self.worker}, {status} refused")
        for key, value in fields.items():
            setattr(self, key, value)

    def mark_done(self) -> None:
        self._finish(self.Status.DONE, error="", traceback="", next_attempt_at=None)

    def mark_failed(self, error: str, traceback: str = "", retry_in: float | None = None) -> None:
        """FAILED; with ``retry_in`` seconds when attempts remain, else final."""
        next_attempt = None
        if retry_in is not None and self.attempts < self.max_attempts:
            next_attempt = timezone.now() + dt.timedelta(seconds=retry_in)
        self._finish(self.Status.FAILED, error=error[:2000], traceback=traceback, next_attempt_at=next_attempt)

    @property
    def retry_due(self) -> bool:
        return self.status == self.Status.FAILED and self.next_attempt_at is not None


class JobStep(models.Model):
    class Outcome(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        OK = "OK", "OK"
        FAILED = "FAILED", "Failed"
        UNDONE = "UNDONE", "Undone"
        UNDO_FAILED = "UNDO_FAILED", "Undo failed"

    class Phase(models.TextChoices):
        APPLY = "apply", "Apply"
        UNDO = "undo", "Undo"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    attempt = models.PositiveIntegerField()
    name = models.CharField(max_length=32)
    phase = models.CharField(max_length=8, choices=Phase.choices, default=Phase.APPLY)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.phase}) {self.outcome}"

    @property
    def duration(self) -> dt.timedelta | None:
        if not self.finished_at:
            return None
        return self.finished_at - self.started_at
