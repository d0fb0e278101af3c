"""A backup whose worker is killed mid-way: never listed as a backup, no lock left in the way.

The real cluster (manage.py run_worker, with its backups cluster) takes the
backup; the whole process group, restic included, is SIGKILLed while restic
is writing the site's files into the repository.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from django.utils import timezone

from jobs.models import Job
from sites.models import Backup, Site
from sites.ops.backups import maintain
from sites.provisioning.orchestrator import no_record
from sites.services import back_up_site
from tests.conftest import token_client, user_in_group
from tests.integration.conftest import run_to_end, start_cluster, stop_cluster, wait_for
from tests.reliability.conftest import injected

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(400)]


def restic_running() -> bool:
    return subprocess.run(["pgrep", "-f", "restic .*backup --stdin"], capture_output=True).returncode == 0


def test_a_backup_killed_mid_way_is_never_listed_and_the_next_one_succeeds(make_site, infra):
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    # Enough data that restic is still writing when the kill comes.
    code, output = infra.docker.exec(
        site.names.php,
        ["sh", "-c", "head -c 300000000 /dev/urandom > /var/www/html/wp-content/uploads/big.bin"],
        user="www-data",
    )
    assert code == 0, output
    drill = {"WPFLEET_LEASE_SECONDS": "5"}
    clusters = [start_cluster(**drill)]
    try:
        job = back_up_site(site)
        wait_for(
            lambda: Backup.objects.filter(job=job, status=Backup.Status.RUNNING).exists() and restic_running(),
            timeout=60,
            interval=0.05,
            message="restic to be writing the backup",
        )
        stop_cluster(clusters[0], signal.SIGKILL)
        # The kernel kills restic when its parent dies (PR_SET_PDEATHSIG); on a busy
        # machine restic may take a moment to be scheduled and die.
        wait_for(
            lambda: not restic_running(), timeout=10, interval=0.05, message="the kill to take restic with the worker"
        )
        interrupted = Backup.objects.get(job=job)
        assert interrupted.status == Backup.Status.RUNNING
        injected("worker killed during a backup", site.name)

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
    assert infra.repository.snapshots({"backup": interrupted.key}) == []
    assert len(infra.repository.snapshots({"backup": good.key})) == 2
    # And the next backup goes through.
    assert run_to_end(back_up_site(site).pk).status == Job.Status.DONE
