"""Handing jobs to the django-q2 clusters, now or at a due time.

Two queues, each a cluster of its own (``manage.py run_worker`` starts
both): "default" (provisioning and every short job) and "backups" (backups,
restores, the repository's maintenance), so that hours of backups never
hold a worker that a new site waits for. A job type's handler names its
queue (jobs.registry).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.tasks import async_task

from jobs import registry


def cluster_names() -> dict[str, str]:
    """{queue: the django-q2 cluster that works it}."""
    main = str(settings.Q_CLUSTER["name"])
    others: dict[str, object] = dict(settings.Q_CLUSTER.get("ALT_CLUSTERS") or {})  # type: ignore[call-overload]
    return {"default": main, **{name.removeprefix(f"{main}-"): name for name in others}}


class _Broker(ORM):
    """The ORM broker for one cluster's queue, optionally enqueueing a task that becomes visible at ``due``.

    The ORM broker hands out only tasks whose ``lock`` is in the past (it
    moves ``lock`` forward when it hands one out, for redelivery): a task
    created with a future ``lock`` waits in the queue table, holding no worker.
    """

    def __init__(self, list_key: str, due: dt.datetime | None):
        super().__init__(list_key=list_key)
        self.due = due

    def enqueue(self, task: str) -> int:
        if self.due is None:
            return super().enqueue(task)
        package = self.get_connection().create(key=self.list_key or Conf.CLUSTER_NAME, payload=task, lock=self.due)
        return package.pk


def enqueue(job_id: int, due: dt.datetime | None = None, job_type: str | None = None) -> None:
    """Queue a run of the job (at ``due``, if given) on its type's queue.

    A second delivery is harmless: a run claims the job first.
    """
    if job_type is None:
        from jobs.models import Job

        job_type = Job.objects.filter(pk=job_id).values_list("type", flat=True).first() or ""
    names = cluster_names()
    cluster = names.get(registry.queue(job_type), names["default"])
    async_task(
        "jobs.runner.run_job",
        job_id,
        task_name=f"job-{job_id}",
        group="wpfleet-jobs",
        broker=_Broker(cluster, due),
    )
