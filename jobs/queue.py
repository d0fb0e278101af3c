"""Handing jobs to the django-q2 cluster, now or at a due time."""

from __future__ import annotations

import datetime as dt

from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.tasks import async_task


class _DueBroker(ORM):
    """The ORM broker, enqueueing a task that becomes visible at ``due``.

    The ORM broker hands out only tasks whose ``lock`` is in the past (it
    moves ``lock`` forward when it hands one out, for redelivery): a task
    created with a future ``lock`` waits in the queue table, holding no worker.
    """

    def __init__(self, due: dt.datetime):
        super().__init__(list_key=Conf.CLUSTER_NAME)
        self.due = due

    def enqueue(self, task: str) -> int:
        package = self.get_connection().create(key=self.list_key or Conf.CLUSTER_NAME, payload=task, lock=self.due)
        return package.pk


def enqueue(job_id: int, due: dt.datetime | None = None) -> None:
    """Queue a run of the job (at ``due``, if given). A second delivery is
    harmless: a run claims the job first."""
    broker = _DueBroker(due) if due is not None else None
    async_task("jobs.runner.run_job", job_id, task_name=f"job-{job_id}", group="wpfleet-jobs", broker=broker)
