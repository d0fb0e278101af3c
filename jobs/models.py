"""Jobs: units of work that always end, DONE or FAILED.

A job is about some object (a site, for sites' jobs), referred to generically
so that this app knows nothing of what it runs. Its life cycle:

    PENDING --claim--> PROCESSING --done--> DONE
                          |  \\--fail, attempts left--> WAITING --due, claim--> PROCESSING
                          |  \\--fail, none left or permanent--> FAILED
                          \\--worker died (lease expired)--> WAITING (taken over: the next
                              claim is a new attempt; with none left, one last run only
                              undoes what was built, then FAILED)

Every transition is a conditional UPDATE that must change exactly one row,
so two workers (or a redelivered task) can never both move the same job.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Case, F, Q, When
from django.utils import timezone

from jobs import registry


class InvalidTransition(Exception):
    """A state change that the life cycle does not allow, or that another process made first."""


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        PROCESSING = "PROCESSING", "Processing"
        WAITING = "WAITING", "Waiting to retry"
        DONE = "DONE", "Done"
        FAILED = "FAILED", "Failed"

    # Defined once: every "is it over?" question is asked with these.
    OPEN = frozenset({Status.PENDING, Status.PROCESSING, Status.WAITING})
    FINAL = frozenset({Status.DONE, Status.FAILED})

    # What the job is about; subject_name outlives the object (history).
    subject_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    subject = GenericForeignKey("subject_type", "subject_id")
    subject_name = models.CharField(max_length=64, db_index=True)
    # What to do: a type registered in jobs.registry by the app that owns it.
    type = models.CharField(max_length=32)
    # What the handler needs beyond the subject (a backup to restore, the
    # kind of a backup): plain values, never secrets (shown in the admin).
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # Set when a dead worker's job had no attempt left: the next run only
    # undoes what the attempts built, then the job is FAILED.
    abandoning = models.BooleanField(default=False)
    # For people: one line saying what went wrong. The traceback is kept apart.
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    # Tracebacks name code paths, hosts and values: never filtered or
    # searched on (a lookup such as traceback__contains is an oracle).
    secret_fields = frozenset({"traceback"})
    # WAITING: when the job may run again.
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
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["subject_type", "subject_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.type_label} {self.subject_name} #{self.pk}"

    # --- derived ----------------------------------------------------------

    @property
    def type_label(self) -> str:
        return registry.label(self.type)

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN

    @property
    def duration(self) -> dt.timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    # --- transitions --------------------------------------------------------

    @classmethod
    def claim(cls, job_id: int, worker: str) -> Job | None:
        """Take a runnable job (PENDING, or WAITING and due); None if there is none.

        A claim is a new attempt, except the last run of an abandoned job,
        which only undoes.
        """
        now = timezone.now()
        runnable = Q(status=cls.Status.PENDING) | Q(status=cls.Status.WAITING, next_attempt_at__lte=now)
        changed = (
            cls.objects.filter(runnable, pk=job_id)
            .filter(Q(attempts__lt=F("max_attempts")) | Q(abandoning=True))
            .update(
                status=cls.Status.PROCESSING,
                attempts=Case(When(abandoning=True, then=F("attempts")), default=F("attempts") + 1),
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
        return cls.objects.get(pk=job_id)

    @classmethod
    def take_over(cls, job_id: int) -> Job | None:
        """A PROCESSING job whose worker's lease expired (the worker died, was
        killed for the task timeout, or ran out of memory).

        The dead attempt counted: with attempts left the job WAITs to be run
        again now; with none left its next run only undoes; if that run's
        worker died too, the job is FAILED here. Returns the job in its new
        state, or None if another process moved it first.
        """
        now = timezone.now()
        job = cls.objects.filter(pk=job_id, status=cls.Status.PROCESSING, lease_expires_at__lt=now).first()
        if job is None:
            return None
        held = cls.objects.filter(pk=job_id, status=cls.Status.PROCESSING, worker=job.worker, lease_expires_at__lt=now)
        if job.abandoning:
            fields: dict[str, Any] = dict(
                status=cls.Status.FAILED,
                finished_at=now,
                error=(job.error + "; " if job.error else "") + "the worker died again while undoing: run the cleanup",
            )
        elif job.attempts >= job.max_attempts:
            fields = dict(
                status=cls.Status.WAITING,
                next_attempt_at=now,
                abandoning=True,
                error=f"the worker running it died on attempt {job.attempts} of {job.max_attempts} "
                "(killed, out of memory, or over the task timeout)",
            )
        else:
            fields = dict(
                status=cls.Status.WAITING,
                next_attempt_at=now,
                error=f"the worker running attempt {job.attempts} died (killed, out of memory, or over the task timeout)",
            )
        fields.update(worker="", lease_expires_at=None, updated_at=now)
        if held.update(**fields) != 1:
            return None
        return cls.objects.get(pk=job_id)

    def renew_lease(self) -> bool:
        now = timezone.now()
        expires = now + dt.timedelta(seconds=settings.WPFLEET_LEASE_SECONDS)
        changed = Job.objects.filter(pk=self.pk, status=self.Status.PROCESSING, worker=self.worker).update(
            lease_expires_at=expires
        )
        if changed == 1:
            self.lease_expires_at = expires
        return changed == 1

    def _finish(self, status: str, **fields: Any) -> None:
        if self.status != self.Status.PROCESSING:
            raise InvalidTransition(f"job {self.pk}: {self.status} -> {status} is not allowed")
        now = timezone.now()
        fields.update(status=status, lease_expires_at=None, updated_at=now)
        if status in self.FINAL:
            fields["finished_at"] = now
        changed = Job.objects.filter(pk=self.pk, status=self.Status.PROCESSING, worker=self.worker).update(**fields)
        if changed != 1:
            raise InvalidTransition(f"job {self.pk}: no longer held by {self.worker}, {status} refused")
        for key, value in fields.items():
            setattr(self, key, value)

    def mark_done(self) -> None:
        self._finish(self.Status.DONE, error="", traceback="", next_attempt_at=None)

    def mark_failed(self, error: str, traceback: str = "", retry_in: float | None = None) -> None:
        """WAITING for a retry in ``retry_in`` seconds when attempts remain; else FAILED for good."""
        if retry_in is not None and self.attempts < self.max_attempts and not self.abandoning:
            due = timezone.now() + dt.timedelta(seconds=retry_in)
            self._finish(self.Status.WAITING, error=error[:2000], traceback=traceback, next_attempt_at=due)
        else:
            self._finish(self.Status.FAILED, error=error[:2000], traceback=traceback, next_attempt_at=None)


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
