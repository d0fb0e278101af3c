"""Handing jobs to the django-q2 cluster."""

from __future__ import annotations

from django_q.tasks import async_task


def enqueue(job_id: int) -> None:
    """Queue a job's run. Harmless if it is delivered twice: the run claims the job first."""
    async_task("jobs.runner.run_job", job_id, task_name=f"job-{job_id}", group="wpfleet-jobs")
