"""A backup whose worker is killed mid-way: never listed as a backup, no lock left in the way.

The real cluster (manage.py run_worker, with its backups cluster) takes the
backup. The kill is the product's crash drill (WPFLEET_CRASH_DURING "backup@1",
in sites.ops.backups): the worker SIGKILLs itself while restic is storing the
site's files, once the backup's row and the job's "backup" step are RUNNING
and committed; restic dies with it, leaving its lock in the repository.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from django.utils import timezone

from jobs.models import Job, JobStep
from sites.models import Backup, Site
from sites.ops.backups import maintain
from sites.provisioning.orchestrator import no_record
from sites.services import back_up_site
from tests.conftest import token_client, user_in_group
from tests.integration.conftest import (
    process_alive,
    run_to_end,
    start_cluster,
    stop_cluster,
    wait_for,
    worker_pid,
)
from tests.reliability.conftest import injected

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(400)]


def restic_running() -> bool:
    return subprocess.run(["pgrep", "-f", "restic .*backup --stdin"], capture_output=True).returncode == 0


def repository_locks(infra) -> set[str]:
    return set(infra.repository.run(["list", "locks", "--no-lock"], "listing locks", timeout=60).split())


def test_a_backup_killed_mid_way_is_never_listed_and_the_next_one_succeeds(make_site, infra):
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    locks_before = repository_locks(infra)
    # "@1": the drill kills attempt 1 only; the same setting lets attempt 2 through.
    drill = {"WPFLEET_CRASH_DURING": "backup@1", "WPFLEET_LEASE_SECONDS": "5"}
    clusters = [start_cluster(**drill)]
    try:
        job = back_up_site(site)
        wait_for(
            lambda: JobStep.objects.filter(job=job, attempt=1, name="backup").exists(),
            timeout=60,
            interval=0.05,
            message="attempt 1 to start the backup",
        )
        running = Job.objects.get(pk=job.pk)
        assert (running.status, running.attempts) == (Job.Status.PROCESSING, 1), running.error
        pid = worker_pid(running)
        wait_for(lambda: not process_alive(pid), timeout=120, interval=0.05, message=f"the drill to kill worker {pid}")
        # The kernel kills restic when its parent dies (PR_SET_PDEATHSIG); on a busy
        # machine restic may take a moment to be scheduled and die.
        wait_for(
            lambda: not restic_running(), timeout=10, interval=0.05, message="the kill to take restic with the worker"
        )
        # It died mid-run: the backup and its step were running, and restic was
        # storing (its lock, taken before it reads anything, is left behind).
        interrupted = Backup.objects.get(job=job)
        assert interrupted.status == Backup.Status.RUNNING and interrupted.finished_at is None
        step = JobStep.objects.get(job=job, attempt=1, name="backup")
        assert (step.outcome, step.finished_at) == (JobStep.Outcome.RUNNING, None)
        stale_locks = repository_locks(infra) - locks_before
        assert stale_locks, "no lock of the killed restic: it was not storing yet"
        injected("worker killed during a backup", site.name)

        stop_cluster(clusters[0], signal.SIGKILL)

        wait_for(
            lambda: Job.objects.get(pk=job.pk).lease_expires_at < timezone.now(), timeout=30, message="lease expiry"
        )
        clusters.append(start_cluster(**drill))
        wait_for(lambda: Job.objects.get(pk=job.pk).is_final, timeout=240, interval=0.2, message="the job to end")
        job.refresh_from_db()
        assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
    finally:
        for cluster in clusters:
            stop_cluster(cluster, signal.SIGKILL)

    interrupted.refresh_from_db()
    assert interrupted.status == Backup.Status.FAILED
    good = Backup.objects.get(job=job, status=Backup.Status.DONE)
    api = token_client(user_in_group("viewer-" + site.name, "Site viewers"))
    assert [entry["id"] for entry in api.get(f"/api/sites/{site.name}/backups").json()] == [good.key]

    # The killed restic left its lock: maintenance (which needs the
    # exclusive lock) removes it as stale and forgets what the dead attempt stored.
    maintain(no_record)
    assert repository_locks(infra) & stale_locks == set()
    assert infra.repository.snapshots({"backup": interrupted.key}) == []
    assert len(infra.repository.snapshots({"backup": good.key})) == 2
    # And the next backup goes through.
    assert run_to_end(back_up_site(site).pk).status == Job.Status.DONE
