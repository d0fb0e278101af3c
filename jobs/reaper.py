"""Recovering jobs from dead workers, and queue entries that were lost.

A job whose worker died (SIGKILL, OOM, the task timeout) stays PROCESSING
with a lease nobody renews. Once the lease has expired, the job is taken
over (jobs.models.Job.take_over: the dead attempt counts) and queued again;
a worker resumes it from the first step, every apply being idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.utils import timezone

from jobs import registry
from jobs.models import Job, JobStep
from jobs.queue import enqueue

log = logging.getLogger("wpfleet.jobs")

# A job still PENDING this long after it was created, or WAITING this long
# past its due time, has probably lost its queue entry (a crash between
# commit and enqueue); queueing it again is harmless since a run claims first.
STRANDED_AFTER = dt.timedelta(minutes=2)


def reap_expired_leases() -> list[int]:
    """Take over every job whose lease expired; returns their ids."""
    taken = []
    expired = Job.objects.filter(status=Job.Status.PROCESSING, lease_expires_at__lt=timezone.now())
    for job_id in expired.values_list("pk", flat=True):
        with transaction.atomic():
            job = Job.take_over(job_id)
            if job is None:
                continue
            # The dead attempt's unfinished steps will never finish: say so.
            JobStep.objects.filter(job=job, attempt=job.attempts, finished_at__isnull=True).update(
                outcome=JobStep.Outcome.FAILED, error="the worker died during this step", finished_at=timezone.now()
            )
            if job.status == Job.Status.FAILED:
                registry.handler_for(job.type).on_final_failure(job)
        log.warning("job %s: its worker died; %s", job.pk, job.error)
        if job.status == Job.Status.WAITING:
            enqueue(job.pk, job_type=job.type)
        taken.append(job.pk)
    return taken


def requeue_stranded() -> list[int]:
    now = timezone.now()
    stranded = Job.objects.filter(status=Job.Status.PENDING, created_at__lt=now - STRANDED_AFTER) | Job.objects.filter(
        status=Job.Status.WAITING, next_attempt_at__lt=now - STRANDED_AFTER
    )
    ids = list(stranded.values_list("pk", flat=True))
    for job_id in ids:
        enqueue(job_id)
    return ids
