"""What the cluster does at start and every minute: recover jobs, then the apps' periodic work."""

from __future__ import annotations

import logging

from jobs import registry
from jobs.reaper import reap_expired_leases, requeue_stranded

log = logging.getLogger("wpfleet.housekeeping")


def housekeeping() -> dict:
    """Run by the cluster at start (manage.py run_worker) and every minute (a django-q2 schedule)."""
    report: dict[str, object] = {"recovered": reap_expired_leases(), "requeued": requeue_stranded()}
    for name, func in registry.periodic().items():
        try:
            report[name] = func()
        except Exception as exc:  # a dependency down: the next pass tries again
            report[name] = f"not done: {exc}"
    if any(report.values()):
        log.info("housekeeping: %s", report)
    return report
