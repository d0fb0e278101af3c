"""After the Docker engine restarts, cleanly or after a crash, every ACTIVE site serves again by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from sites.models import Site
from sites.ops.reconcile import reconcile_all
from tests.integration.conftest import REPO, fetch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(600)]

ENGINE_CRASHES: list[str] = []


def dockerd_pid() -> int:
    return int(Path("/var/run/docker.pid").read_text().strip())


def stop_engine(sig: int) -> None:
    pid = dockerd_pid()
    os.kill(pid, sig)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError("dockerd did not stop")


def start_engine() -> None:
    # What a boot (or systemd) does: the lab's own start-up, stale pid file and all.
    subprocess.run([str(REPO / "lab" / "up.sh")], check=True, capture_output=True, timeout=300)
    connection.close()  # the control database may have been on the restarted engine


@pytest.mark.parametrize("how", ["clean restart", "SIGKILL"])
def test_active_sites_serve_again_after_the_engine_restarts(how, make_site, infra):
    sites = [make_site(), make_site()]
    assert all(site.status == Site.Status.ACTIVE for site in sites)
    stop_engine(signal.SIGTERM if how == "clean restart" else signal.SIGKILL)
    ENGINE_CRASHES.append(how)
    start_engine()

    repaired = reconcile_all()
    for site in sites:
        wait_for(lambda: fetch(site.name).status_code == 200, timeout=60, message=f"{site.name} to serve")
    if how == "SIGKILL":
        # unless-stopped does not bring containers back after a crash: the reconciler did.
        assert {site.name for site in sites} <= set(repaired)
        for site in sites:
            site.refresh_from_db()
            assert "container" in site.drift and site.checked_at is not None
    # A second pass finds nothing left to repair.
    assert {name: drift for name, drift in reconcile_all().items() if name in {s.name for s in sites}} == {}


def test_report_engine_crashes():
    print(f"\nengine restarts injected: {len(ENGINE_CRASHES)} ({', '.join(ENGINE_CRASHES)})")


def test_the_admin_lists_sites_whose_last_check_found_drift(make_site, infra, admin_client):
    site = make_site()
    infra.docker.container(site.names.nginx).stop(timeout=1)
    assert site.name in reconcile_all()
    listed = admin_client.get("/admin/sites/site/?drifted=yes").content.decode()
    assert site.name in listed
    assert fetch(site.name).status_code == 200
    reconcile_all()
    assert site.name not in admin_client.get("/admin/sites/site/?drifted=yes").content.decode()
