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
    def __init__(self, job: Job):
        self.job = job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.pk}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
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
