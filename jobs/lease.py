"""A running job's lease, renewed from a side thread while the job runs.

If the worker dies, nobody renews it: once it has expired the reaper takes
the job over (jobs.reaper).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from django.conf import settings
from django.db import connection

from jobs.models import Job

log = logging.getLogger("wpfleet.jobs")


class Lease:
    """``with Lease(job):`` renews the job's lease every ``interval`` seconds
    (a third of WPFLEET_LEASE_SECONDS, at least 1 s) until the block ends.

    A renewal that fails (the control database away for a moment) is tried
    again at the next interval; a lease that was lost (the job taken over)
    is not renewed again.
    """

    def __init__(self, job: Job, interval: float | None = None):
        self.job = job
        self.interval = interval if interval is not None else max(1.0, settings.WPFLEET_LEASE_SECONDS / 3)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.pk}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not self.job.renew_lease():
                        log.warning("job %s: lease lost", self.job.pk)
                        return
                except Exception:
                    log.exception("job %s: lease renewal failed", self.job.pk)
        finally:
            connection.close()
