"""Running one job: claim it, hold a lease, let its handler work, record every step.

The task body is ``run_job``: one attempt, never a wait. A failed attempt
with attempts left goes WAITING and is queued again for its due time
(jobs.queue), so no worker sleeps through a backoff.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
import uuid

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from jobs import registry
from jobs.lease import Lease
from jobs.models import Job, JobStep
from jobs.queue import enqueue
from jobs.redaction import redact

log = logging.getLogger("wpfleet.jobs")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class StepRecorder:
    """Writes each step's start and end to JobStep rows as they happen."""

    def __init__(self, job: Job, secrets: list[str]):
        self.job = job
        self.secrets = secrets

    def __call__(self, name: str, phase: str, outcome: str, error: str = "", handle: object | None = None) -> object:
        if not isinstance(handle, JobStep):
            return JobStep.objects.create(
                job=self.job, attempt=self.job.attempts, name=name, phase=phase, outcome=outcome
            )
        handle.outcome = outcome
        handle.error = redact(error, self.secrets)[:2000]
        handle.finished_at = timezone.now()
        handle.save(update_fields=["outcome", "error", "finished_at"])
        return handle


def backoff_seconds(attempt: int) -> float:
    return settings.WPFLEET_RETRY_BACKOFF_SECONDS * (2 ** max(0, attempt - 1))


def is_permanent(exc: BaseException) -> bool:
    """Would running the job again fail the same way? (A foreign name, an invalid configuration.)"""
    return bool(getattr(exc, "permanent", False) or getattr(getattr(exc, "cause", None), "permanent", False))


def run_job(job_id: int) -> str:
    """The task body: one attempt at the job, if it can be claimed.

    Returns 'done', 'retry' (queued again for its due time), 'failed' (for
    good) or 'nothing to claim' (a second delivery, or not due yet).
    """
    close_old_connections()
    job = Job.claim(job_id, worker_id())
    if job is None:
        return "nothing to claim"
    return attempt(job)


def attempt(job: Job) -> str:
    """One attempt at a claimed job."""
    try:
        handler = registry.handler_for(job.type)
    except registry.UnknownJobType as exc:
        job.mark_failed(str(exc))
        return "failed"
    secrets = handler.secrets(job)
    record = StepRecorder(job, secrets)
    log.info("job %s: %s %s attempt %s/%s", job.pk, job.type, job.subject_name, job.attempts, job.max_attempts)
    if job.abandoning:
        return _abandon(job, handler, record, secrets)
    try:
        with Lease(job):
            handler.run(job, record)
    except Exception as exc:
        error = redact(str(exc), secrets)
        permanent = is_permanent(exc)
        if permanent:
            error = f"{error} (permanent: not retried)"
        retry_in = None if permanent or job.attempts >= job.max_attempts else backoff_seconds(job.attempts)
        with transaction.atomic():
            job.mark_failed(error, redact(traceback.format_exc(), secrets), retry_in=retry_in)
            if job.is_final:
                handler.on_final_failure(job)
        log.warning("job %s: attempt %s failed: %s", job.pk, job.attempts, error)
        if job.is_final:
            return "failed"
        due = job.next_attempt_at
        transaction.on_commit(lambda: enqueue(job.pk, due=due, job_type=job.type))
        return "retry"
    with transaction.atomic():
        handler.on_done(job)
        job.mark_done()
    log.info("job %s: done", job.pk)
    return "done"


def _abandon(job: Job, handler: registry.JobHandler, record: StepRecorder, secrets: list[str]) -> str:
    """The last run of a job whose worker kept dying: undo, then FAILED."""
    reason = job.error or "the job's worker died"
    try:
        with Lease(job):
            handler.abandon(job, record)
        outcome = f"{reason}; what it built was removed"
    except Exception as exc:
        outcome = f"{reason}; removing what it built failed too: {redact(str(exc), secrets)}"
    with transaction.atomic():
        job.mark_failed(outcome)
        handler.on_final_failure(job)
    log.warning("job %s: abandoned: %s", job.pk, outcome)
    return "failed"
