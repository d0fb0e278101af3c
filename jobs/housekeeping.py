"""What the cluster does at start and every minute: recover jobs of dead workers.

A job whose worker died (SIGKILL, OOM, a restart) stays PROCESSING with a
lease that nobody renews. Once the lease has expired the job is taken over
and resumed from the first step: every apply is idempotent, so what the dead
worker built is found and kept, and what it did not is built now. If the
resumed attempt fails, the usual rollback and retry follow.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.utils import timezone

from jobs.models import Job
from jobs.queue import enqueue
from jobs.runner import attempt, worker_id
from sites.reconcile import reconcile_all

log = logging.getLogger("wpfleet.housekeeping")

# A job still PENDING this long after it was created has probably lost its
# queue entry (a crash between commit and enqueue); enqueueing it again is
# harmless because a run claims the job first.
STRANDED_AFTER = dt.timedelta(minutes=2)


def reap_expired_leases() -> list[int]:
    recovered = []
    expired = Job.objects.filter(status=Job.Status.PROCESSING, lease_expires_at__lt=timezone.now())
    for job_id in expired.values_list("pk", flat=True):
        job = Job.take_over(job_id, worker_id())
        if job is None:
            continue
        log.warning("job %s: worker %s lost; recovering", job.pk, job.worker)
        outcome = attempt(job)
        if outcome == "retry":
            enqueue(job.pk)
        recovered.append(job.pk)
    return recovered


def requeue_stranded() -> list[int]:
    now = timezone.now()
    stranded = Job.objects.filter(status=Job.Status.PENDING, created_at__lt=now - STRANDED_AFTER) | Job.objects.filter(
        status=Job.Status.FAILED, next_attempt_at__lt=now - STRANDED_AFTER
    )
    ids = list(stranded.values_list("pk", flat=True))
    for job_id in ids:
        enqueue(job_id)
    return ids


def housekeeping() -> dict:
    """Run by the cluster at start (manage.py run_worker) and every minute (a django-q2 schedule)."""
    report = {"recovered": reap_expired_leases(), "requeued": requeue_stranded()}
    try:
        report["repaired"] = reconcile_all()
    except Exception as exc:  # a dependency down: the next run repairs
        report["repaired"] = f"not checked: {exc}"
    if report["recovered"] or report["requeued"] or report["repaired"]:
        log.info("housekeeping: %s", report)
    return report
