"""Running one job: claim it, hold a lease, run the provisioner, record every step."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from jobs.models import Job, JobStep
from sites.models import Site, known_secrets
from sites.provisioner import Provisioner

log = logging.getLogger("wpfleet.jobs")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


class StepRecorder:
    """Writes each step's start and end to JobStep rows as they happen."""

    def __init__(self, job: Job, secrets: list[str]):
        self.job = job
        self.secrets = secrets

    def __call__(self, name: str, phase: str, outcome: str, error: str = "", handle: JobStep | None = None):
        if handle is None:
            return JobStep.objects.create(job=self.job, attempt=self.job.attempts, name=name, phase=phase, outcome=outcome)
        handle.outcome = outcome
        handle.error = redact(error, self.secrets)[:2000]
        handle.finished_at = timezone.now()
        handle.save(update_fields=["outcome", "error", "finished_at"])
        return handle


class Lease:
    """Renews the job's lease from a side thread while the job runs."""

    def __init__(self, job: Job):
        self.job = job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.pk}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        interval = max(1.0, settings.WPFLEET_LEASE_SECONDS / 3)
        try:
            while not self._stop.wait(interval):
                try:
                    if not self.job.renew_lease():
                        log.warning("job %s: lease lost", self.job.pk)
                        return
                except Exception:
                    log.exception("job %s: lease renewal failed", self.job.pk)
        finally:
            connection.close()


def backoff_seconds(attempt: int) -> float:
    return settings.WPFLEET_RETRY_BACKOFF_SECONDS * (2 ** max(0, attempt - 1))


def run_job(job_id: int) -> str:
    """The task body: run a job's attempts until it is done or finally failed.

    A second delivery of the same task finds nothing to claim and returns.
    """
    close_old_connections()
    worker = worker_id()
    outcome = "nothing to claim"
    while True:
        job = Job.claim(job_id, worker)
        if job is None:
            waiting = Job.objects.filter(pk=job_id, status=Job.Status.FAILED, next_attempt_at__isnull=False).first()
            if waiting is None:
                return outcome
            # A retry is due later: wait for it here, holding no lease.
            time.sleep(max(0.05, min(5.0, (waiting.next_attempt_at - timezone.now()).total_seconds())))
            continue
        outcome = attempt(job)
        if outcome in ("done", "failed"):
            return outcome


def attempt(job: Job) -> str:
    """One attempt at a claimed job. Returns 'done', 'retry' or 'failed'."""
    secrets = job.site.secrets() if job.site is not None else known_secrets()
    site = job.site
    log.info("job %s: %s %s attempt %s/%s", job.pk, job.type, job.site_name, job.attempts, job.max_attempts)
    if site is None:
        job.mark_failed("the site no longer exists")
        return "failed"
    provisioner = Provisioner(site.name, site.db_password, recorder=StepRecorder(job, secrets), attempt=job.attempts)
    try:
        with Lease(job):
            if job.type == Job.Type.PROVISION:
                provisioner.provision()
            else:
                provisioner.deprovision()
    except Exception as exc:
        error = redact(str(exc), secrets)
        # A name held by someone else, or a configuration the infrastructure
        # refuses, fails the same way every time: no retry.
        permanent = bool(getattr(getattr(exc, "cause", exc), "permanent", False))
        if permanent:
            error = f"{error} (permanent: not retried)"
        retry_in = backoff_seconds(job.attempts) if job.attempts < job.max_attempts and not permanent else None
        with transaction.atomic():
            job.mark_failed(error, redact(traceback.format_exc(), secrets), retry_in=retry_in)
            if job.is_final:
                release(site, job)
        log.warning("job %s: attempt %s failed: %s", job.pk, job.attempts, error)
        return "failed" if job.is_final else "retry"
    with transaction.atomic():
        if job.type == Job.Type.PROVISION:
            site.mark_active()
            job.mark_done()
            release(site, job)
        else:
            job.mark_done()
            # The name is free again; the job keeps site_name for history.
            Site.objects.filter(pk=site.pk).delete()
    log.info("job %s: done", job.pk)
    return "done"


def release(site: Site, job: Job) -> None:
    Site.objects.filter(pk=site.pk, current_job=job).update(current_job=None)
