"""After the Docker engine restarts, cleanly or after a crash, every ACTIVE site serves again
without anyone running a repair: live-restore keeps the containers running, and when a crash
took the containers too, the worker cluster, up all along, starts them."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from django.utils import timezone

from jobs.models import Job
from sites.infra.errors import InfraError
from sites.models import Site
from sites.ops.reconcile import reconcile_all
from sites.provisioning.steps import OK, observe_site
from sites.services import delete_site
from tests.integration.conftest import (
    WORKER_LOG,
    fetch,
    lab_up,
    leftovers,
    run_to_end,
    start_cluster,
    stop_cluster,
    wait_for,
)
from tests.reliability.conftest import injected, shim_pids, stop_engine

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(400)]


def serves(name: str) -> bool:
    try:
        response = fetch(name, timeout=5)
    except InfraError:
        return False
    return response.status_code == 200 and "WordPress" in response.text


def worker_log_since(offset: int) -> str:
    with open(WORKER_LOG, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


@pytest.mark.parametrize("how", ["clean restart", "SIGKILL"])
def test_active_sites_serve_again_after_the_engine_restarts(how, make_site, infra):
    """The lab's engine runs with live-restore (lab/up.sh): the sites' containers outlive
    it, stopped cleanly or killed, and are the same processes once it is back."""
    sites = [make_site(), make_site()]
    assert [site.status for site in sites] == [Site.Status.ACTIVE] * 2
    assert all(serves(site.name) for site in sites)
    names = [name for site in sites for name in (site.names.php, site.names.nginx)]
    started = {name: infra.docker.container(name).attrs["State"]["StartedAt"] for name in names}

    offset = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    cluster = start_cluster()
    try:
        # The cluster is up (its housekeeping at start is done) before the engine goes.
        wait_for(
            lambda: "housekeeping at start" in worker_log_since(offset), timeout=60, message="the cluster to start"
        )
        stop_engine(signal.SIGTERM if how == "clean restart" else signal.SIGKILL)
        injected("engine restart", how)
        with pytest.raises(InfraError):
            infra.docker.ping()
        # What a boot (or the operator) does: the lab's start-up, stale pid file and all.
        # It starts the engine, MariaDB and Caddy; nothing here repairs the sites.
        lab_up()

        for site in sites:
            wait_for(
                lambda name=site.name: serves(name), timeout=180, interval=1, message=f"{site.name} to serve again"
            )
        assert cluster.poll() is None, "the worker cluster died during the engine's restart"
        for site in sites:
            site.refresh_from_db()
            assert site.status == Site.Status.ACTIVE
            assert [str(r) for r in observe_site(site.name, infra) if r.state != OK] == []
        # Not restarted: the same containers ran on (a crash that took them too is the next test's).
        assert {name: infra.docker.container(name).attrs["State"]["StartedAt"] for name in names} == started
    finally:
        stop_cluster(cluster)
        lab_up()  # whatever happened, the lab is up again for the next test


def test_the_admin_lists_sites_whose_last_check_found_drift(make_site, infra, admin_client):
    """The operator's check (manage.py reconcile, here reconcile_all) records the drift it
    repaired; the admin's drift filter lists the site until a check finds it whole."""
    site = make_site()
    infra.docker.container(site.names.nginx).stop(timeout=1)
    assert site.name in reconcile_all()
    listed = admin_client.get("/admin/sites/site/?drifted=yes").content.decode()
    assert site.name in listed
    # The repair restarts PHP-FPM in the new nginx's network namespace; until
    # it listens (its entrypoint runs first) nginx answers 502, so wait.
    wait_for(lambda: serves(site.name), timeout=30, interval=0.2, message=f"{site.name} to serve again")
    assert site.name not in reconcile_all()
    assert site.name not in admin_client.get("/admin/sites/site/?drifted=yes").content.decode()


def test_sites_whose_containers_all_stopped_serve_again_with_the_worker_running(make_site, infra):
    """What a crash that took every container leaves (a power cut; an engine without
    live-restore): the cluster's reconciler starts them all, in parallel, nobody asking."""
    sites = [make_site(), make_site(), make_site()]
    offset = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    cluster = start_cluster()
    try:
        wait_for(
            lambda: "housekeeping at start" in worker_log_since(offset), timeout=60, message="the cluster to start"
        )
        stopped_at = timezone.now()
        for site in sites:
            for name in (site.names.nginx, site.names.php):
                infra.docker.stop(infra.docker.container(name), timeout=1)
        assert not any(serves(site.name) for site in sites)

        # Bounded: the cluster's housekeeping runs every minute.
        for site in sites:
            wait_for(
                lambda name=site.name: serves(name), timeout=150, interval=1, message=f"{site.name} to serve again"
            )
        for site in sites:
            site.refresh_from_db()
            assert site.checked_at > stopped_at
            assert f"PHP-FPM container php_{site.name} exited: started" in site.drift, site.drift
            assert f"nginx container nginx_{site.name} exited: started" in site.drift, site.drift
    finally:
        stop_cluster(cluster)


def site_processes(infra, site: Site) -> list[int]:
    """The pids of the site's containers' first processes and of the containerd shim that runs both.

    One shim: the lab's shim wrapper puts a site's PHP-FPM under its nginx's (lab/shim/).
    """
    containers = [infra.docker.container(name) for name in (site.names.nginx, site.names.php)]
    pids = [c.attrs["State"]["Pid"] for c in containers if c.attrs["State"]["Pid"]]
    return pids + shim_pids({c.id for c in containers})


def test_after_a_power_cut_the_worker_brings_sites_back_and_one_can_be_deleted_leaving_nothing(make_site, infra):
    """A power cut for the sites: the engine and every process of their containers die
    together. Nothing of them survives for live-restore; the engine's start must not
    start a PHP container before its nginx (a failed start there leaves its volumes
    counted as mounted for good), and the worker's reconciler brings the sites back."""
    sites = [make_site(), make_site()]
    victims = [pid for site in sites for pid in site_processes(infra, site)]
    assert len(victims) == 6, victims  # per site: nginx's and PHP-FPM's first processes, their one shim
    offset = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    engine_log = WORKER_LOG.parent / "dockerd.log"  # lab/up.sh's
    engine_offset = engine_log.stat().st_size
    cluster = start_cluster()
    try:
        wait_for(
            lambda: "housekeeping at start" in worker_log_since(offset), timeout=60, message="the cluster to start"
        )
        stop_engine(signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        injected("power cut", "dockerd and the sites' container processes SIGKILLed")
        lab_up()

        for site in sites:
            wait_for(
                lambda name=site.name: serves(name), timeout=180, interval=1, message=f"{site.name} to serve again"
            )
    finally:
        stop_cluster(cluster)
        lab_up()
    with open(engine_log, "rb") as log:
        log.seek(engine_offset)
        assert b"cannot join network of a non running container" not in log.read(), "the engine started a PHP itself"
    gone = sites[0]
    job = delete_site(gone)
    assert run_to_end(job.pk).status == Job.Status.DONE, Job.objects.get(pk=job.pk).error
    assert leftovers(infra, gone.name) == []
    assert serves(sites[1].name)


def test_a_site_deleted_after_a_live_restore_leaves_nothing_once_the_engine_has_restarted(make_site, infra):
    """An engine that live-restored a site's running containers forgets that they mount the
    site's volumes (moby#44422; the lab's docker.io 20.10.24 has no fix): once the containers
    are gone it refuses the volumes as "in use" until it restarts. The delete still ends DONE
    and the site's data goes with its quota directory; what stays is two volume names bound to
    a directory that no longer exists, which a reconciler pass removes after the restart."""
    site = make_site()
    try:
        stop_engine(signal.SIGKILL)
        injected("engine restart", "SIGKILL, the site's containers live on")
        lab_up()
        wait_for(lambda: serves(site.name), timeout=180, interval=1, message=f"{site.name} to serve again")

        job = delete_site(site)
        finished = run_to_end(job.pk)
        assert finished.status == Job.Status.DONE, finished.error
        held = sorted(r.name for r in observe_site(site.name, infra) if r.exists)
        # On an engine with moby#45754 nothing would stay: then this test has nothing left to prove.
        # (The PHP's /tmp volume, an overlay, is not among them: 20.10.24 let it go at once.)
        assert held == [site.names.volume, site.names.cache_volume], "the engine let go of the volumes at once"
        assert infra.quotas is not None, "the lab has disk quotas: volumes bind quota directories"
        assert not os.path.lexists(infra.quotas.path(site.name)), "the site's data outlived its delete"
        assert reconcile_all() == {}, "the engine has not restarted: a pass can remove nothing yet"

        stop_engine(signal.SIGTERM)
        lab_up()
        assert reconcile_all() == {
            "(volumes)": [
                f"volume {name} of a deleted site: removed (the engine had held it)"
                for name in (site.names.volume, site.names.cache_volume)
            ]
        }
        assert leftovers(infra, site.name) == []
    finally:
        lab_up()
