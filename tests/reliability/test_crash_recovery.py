"""Killing the worker cluster at any point never leaves a job PROCESSING for good."""

from __future__ import annotations

import signal
import time

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import Job, JobStep
from jobs.queue import enqueue
from sites.models import Site
from sites.provisioning.steps import STEP_NAMES
from sites.services import create_site
from tests.conftest import unique_name
from tests.integration.conftest import fetch, force_remove, start_cluster, stop_cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(300)]

LEASE = "5"
CRASHES: list[str] = []


def resources_of(infra, name: str) -> dict[str, int]:
    labels = {"label": [f"wpfleet.owner={settings.WPFLEET_OWNER}", f"wpfleet.site={name}"]}
    client = infra.docker.client
    return {
        "containers": len(client.containers.list(all=True, filters=labels)),
        "volumes": len(client.volumes.list(filters=labels)),
        "networks": len(client.networks.list(filters=labels)),
        "databases": int(infra.db.database_exists(f"wp_{name}")),
        "snippets": int(infra.caddy.has_snippet(name)),
    }


@pytest.mark.parametrize(
    "moment,sig",
    [(step, signal.SIGKILL) for step in STEP_NAMES] + [("php+0.5s", signal.SIGKILL), ("nginx", signal.SIGTERM)],
)
def test_a_killed_cluster_leaves_no_job_processing_and_the_site_ends_whole(moment, sig, infra, transactional_db):
    name = unique_name("kx")
    first = start_cluster(WPFLEET_LEASE_SECONDS=LEASE)
    try:
        site = create_site(name)
        job_id = site.current_job_id
        step, _, delay = moment.partition("+")
        wait_for(
            lambda: JobStep.objects.filter(job_id=job_id, name=step, phase="apply").exists()
            or Job.objects.get(pk=job_id).status == Job.Status.DONE,
            timeout=60,
            interval=0.02,
            message=f"step {step} to start",
        )
        if delay:
            # In the middle of the WordPress copy into the volume.
            time.sleep(float(delay.rstrip("s")))
        stop_cluster(first, sig)
        CRASHES.append(moment)
        job = Job.objects.get(pk=job_id)
        if job.status == Job.Status.PROCESSING:
            # Nobody renews the lease now; the next cluster takes the job over once it expires.
            wait_for(lambda: Job.objects.get(pk=job_id).lease_expires_at < timezone.now(), timeout=30, message="lease expiry")
        second = start_cluster(WPFLEET_LEASE_SECONDS=LEASE)
        try:
            wait_for(lambda: Job.objects.get(pk=job_id).is_final, timeout=120, message="job to finish")
        finally:
            stop_cluster(second)
        job = Job.objects.get(pk=job_id)
        site = Site.objects.get(pk=site.pk)
        assert job.status == Job.Status.DONE, job.error
        assert site.status == Site.Status.ACTIVE
        assert resources_of(infra, name) == {"containers": 2, "volumes": 1, "networks": 1, "databases": 1, "snippets": 1}
        assert fetch(name).status_code == 200
    finally:
        stop_cluster(first, signal.SIGKILL)
        force_remove(infra, name)


def test_a_second_delivery_of_the_same_job_runs_nothing_twice(infra, transactional_db):
    name = unique_name("dup")
    site = create_site(name)
    enqueue(site.current_job_id)  # the broker hands the same job out again
    cluster = start_cluster(WPFLEET_WORKERS="2")
    try:
        wait_for(lambda: Job.objects.get(pk=site.current_job_id).is_final, timeout=120, message="job to finish")
        job = Job.objects.get(pk=site.current_job_id)
        assert job.status == Job.Status.DONE and job.attempts == 1
        applied = list(job.steps.filter(phase="apply").values_list("name", flat=True))
        assert sorted(applied) == sorted(STEP_NAMES)
    finally:
        stop_cluster(cluster)
        force_remove(infra, name)


def test_report_crashes_injected():
    print(f"\nworker crashes injected: {len(CRASHES)} ({', '.join(CRASHES)})")
