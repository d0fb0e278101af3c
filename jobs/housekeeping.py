"""What the cluster does at start and every minute: recover jobs, then the apps' periodic work."""

from __future__ import annotations

import logging
import os
import socket
import uuid

from django.conf import settings
from django.core.cache import cache

from jobs import registry
from jobs.reaper import reap_expired_leases, requeue_stranded

log = logging.getLogger("wpfleet.housekeeping")

# Held while the apps' periodic work runs (an atomic add in the shared cache,
# the control database): one pass at a time, whichever worker runs it. A
# pass that outlives a minute (thousands of sites, or every one of them to
# repair after an engine crash) would otherwise meet the next minute's, and
# passes piling up would hold every worker while new sites wait.
LOCK_KEY = "wpfleet:housekeeping:periodic"


def _holder_is_dead(value: object) -> bool:
    """Whether the lock's holder was a process of this machine that no longer runs (a killed worker)."""
    host, _, rest = str(value or "").partition(" ")
    pid = rest.partition(" ")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: its lock lapses by itself
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _take_lock(token: str) -> bool:
    timeout = settings.WPFLEET_HOUSEKEEPING_LOCK_SECONDS
    if cache.add(LOCK_KEY, token, timeout=timeout):
        return True
    # A worker killed in a pass holds the lock until it lapses; when that
    # worker ran here and is gone, the lock is taken over at once.
    held = cache.get(LOCK_KEY)
    if held is not None and _holder_is_dead(held):
        cache.delete(LOCK_KEY)
        return cache.add(LOCK_KEY, token, timeout=timeout)
    return False


def housekeeping() -> dict:
    """Run by the cluster at start (manage.py run_worker) and every minute (a django-q2 schedule)."""
    # Recovering jobs is quick and idempotent: every pass does it.
    report: dict[str, object] = {"recovered": reap_expired_leases(), "requeued": requeue_stranded()}
    token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
    if not _take_lock(token):
        report["periodic"] = "skipped: another pass is running"
        log.info("housekeeping: %s", report)
        return report
    try:
        for name, func in registry.periodic().items():
            try:
                report[name] = func()
            except Exception as exc:  # a dependency down: the next pass tries again
                report[name] = f"not done: {exc}"
    finally:
        if cache.get(LOCK_KEY) == token:
            cache.delete(LOCK_KEY)
    if any(report.values()):
        log.info("housekeeping: %s", report)
    return report
