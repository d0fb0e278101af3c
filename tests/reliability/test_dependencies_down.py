"""A dependency that is really down (its container or the engine stopped, not a wrong
address): the job's attempt fails naming it, health reports it, nothing is left once it
is back, and a retry then builds the site.

Each outage is short and the lab is always brought back with lab/up.sh.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection

from jobs.models import Job, JobStep
from jobs.runner import run_job
from sites.models import Site
from sites.provisioning import handlers
from sites.services import delete_site
from tests.integration.conftest import fetch, lab_up, leftovers, run_to_end
from tests.reliability.conftest import injected, stop_engine

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(300)]

MARIADB_CONTAINER = "wpfleet-mariadb"  # lab/lib.sh


def control_db_on_the_lab_mariadb() -> bool:
    db = connection.settings_dict
    admin = django_settings.WPFLEET_DB_ADMIN
    return db["ENGINE"].endswith("mysql") and (db["HOST"], int(db["PORT"] or 3306)) == (admin["host"], admin["port"])


needs_control_db_elsewhere = pytest.mark.skipif(
    "control_db_on_the_lab_mariadb()",
    reason="the control database is on wpfleet-mariadb in this run: stopping it takes the panel's own "
    "database away too (that outage is not this test's)",
)


def docker_stop(container: str) -> None:
    subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=60)
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", container], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert state == "exited", f"{container} is {state} after docker stop"
    injected("dependency stopped", container)


def stop_at_start_of(step: str, container: str, monkeypatch) -> list[str]:
    """Stop ``container`` when the job's first attempt starts ``step`` (the provisioner's step hook)."""
    fired: list[str] = []

    def hook(name: str) -> None:
        if name == step and not fired:
            fired.append(name)
            docker_stop(container)

    original = handlers._provisioner

    def provisioner_with_hook(site, job, record, **options):
        provisioner = original(site, job, record, **options)
        if job.attempts == 1:
            provisioner.during_step = hook
        return provisioner

    monkeypatch.setattr(handlers, "_provisioner", provisioner_with_hook)
    return fired


def docker_leftovers(infra, name: str) -> list[str]:
    """The site's containers, volume and network (what can be seen while MariaDB or Caddy is down)."""
    return [
        f"{kind} {item.name}"
        for kind in ("container", "volume", "network")
        for item in infra.docker.list_owned(kind, name)
    ]


def health(api) -> tuple[int, list[str]]:
    response = api.get("/api/health")
    return response.status_code, response.json().get("failing", [])


@pytest.fixture
def quick_jobs(settings):
    settings.WPFLEET_RETRY_BACKOFF_SECONDS = 0.1
    # WordPress without its database answers 500: the live check gives up sooner.
    settings.WPFLEET_LIVE_TIMEOUT_SECONDS = 5
    cache.clear()  # the health throttle's counters
    return settings


@pytest.mark.parametrize(
    "dependency,container,stopped_at,failed_step,left_behind",
    [
        # Down before the job: the database step cannot connect; nothing was created.
        pytest.param("mariadb", MARIADB_CONTAINER, None, "database", [], marks=needs_control_db_elsewhere),
        # Down in the middle, once the site's database, account and WordPress tables exist:
        # the live check fails (WordPress has no database) and the rollback cannot drop
        # them until it is back.
        pytest.param(
            "mariadb",
            MARIADB_CONTAINER,
            "route",
            "live_check",
            ["database {n.database}", "database user {n.db_user}@{host}", "WordPress install {n.database}"],
            marks=needs_control_db_elsewhere,
        ),
        # Down before the job: the route cannot be written; nothing of Caddy's was written.
        pytest.param("caddy", django_settings.WPFLEET_CADDY_CONTAINER, None, "route", []),
        # Down once the route is written: the live check gets no answer, the rollback
        # cannot remove the route, and Caddy, started again, has it (with no upstream
        # behind it: the site's nginx was removed) until the retry or the cleanup.
        pytest.param(
            "caddy",
            django_settings.WPFLEET_CADDY_CONTAINER,
            "live_check",
            "live_check",
            ["Caddy route {n.route}"],
        ),
    ],
)
def test_a_dependency_down_fails_the_attempt_naming_it_and_the_retry_builds_the_site_once_it_is_back(
    dependency, container, stopped_at, failed_step, left_behind, make_site, infra, api, quick_jobs, monkeypatch
):
    site = make_site(run=False, max_attempts=2)
    name, job_id = site.name, site.current_job_id
    try:
        if stopped_at is None:
            docker_stop(container)
        else:
            fired = stop_at_start_of(stopped_at, container, monkeypatch)
        run_job(job_id)  # attempt 1
        if stopped_at is not None:
            assert fired == [stopped_at]
        job = Job.objects.get(pk=job_id)
        # Not final: a dependency that is down may come back, so the job waits to retry.
        assert (job.status, job.attempts) == (Job.Status.WAITING, 1), job.error
        assert job.error.startswith(f"step {failed_step} failed: "), job.error
        # The step that owns what lives on the dependency could not be undone, and says why.
        owner = {"mariadb": "database", "caddy": "route"}[dependency]
        _, _, incomplete = job.error.partition(" | rollback incomplete: ")
        assert f"{owner}: {dependency}: " in incomplete, job.error
        failed = job.steps.get(attempt=1, name=failed_step, phase="apply")
        assert failed.outcome == JobStep.Outcome.FAILED
        # The live check sees the symptom: WordPress answers 500 without its database.
        cause = "site" if failed_step == "live_check" else dependency
        assert failed.error.startswith(f"{cause}: "), failed.error
        if failed_step == "live_check":
            symptom = {"mariadb": "HTTP 500)", "caddy": "Connection refused)"}[dependency]
            assert symptom in failed.error, failed.error
        undo = job.steps.get(attempt=1, name=owner, phase="undo")
        assert undo.outcome == JobStep.Outcome.UNDO_FAILED and undo.error.startswith(f"{dependency}: "), undo.error
        # Everything on the engine was rolled back even though the dependency is down.
        assert docker_leftovers(infra, name) == []
        status, failing = health(api)
        assert (status, failing) == (503, [dependency])
        assert api.get(f"/api/sites/{name}").status_code == 200  # the panel keeps answering
    finally:
        lab_up()
    assert health(api) == (200, [])

    # What the rollback could not remove while the dependency was down, and nothing else.
    expected = [item.format(n=site.names, host=quick_jobs.WPFLEET_DB_USER_HOST) for item in left_behind]
    assert sorted(leftovers(infra, name)) == sorted(expected)

    job = run_to_end(job_id)  # attempt 2, with the dependency back
    assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
    site = Site.objects.get(pk=site.pk)
    assert site.status == Site.Status.ACTIVE
    response = fetch(name)
    assert response.status_code == 200 and "WordPress" in response.text

    assert run_to_end(delete_site(site).pk).status == Job.Status.DONE
    assert not Site.objects.filter(pk=site.pk).exists()
    assert leftovers(infra, name) == []


@needs_control_db_elsewhere
def test_a_job_fails_naming_docker_while_the_engine_is_stopped_and_nothing_is_left(make_site, infra, api, quick_jobs):
    site = make_site(run=False, max_attempts=1)
    name, job_id = site.name, site.current_job_id
    try:
        stop_engine(signal.SIGTERM)
        injected("dependency stopped", "dockerd")
        job = run_to_end(job_id)
        assert (job.status, job.attempts) == (Job.Status.FAILED, 1), job.error
        assert "docker: " in job.error, job.error
        # The first step that needs the engine failed saying so, and none after it started.
        row = job.steps.get(attempt=1, name="volume", phase="apply")
        assert row.outcome == JobStep.Outcome.FAILED and row.error.startswith("docker: "), row.error
        assert not job.steps.filter(attempt=1, name__in=("nginx", "php", "nginx_config"), phase="apply").exists()
        site = Site.objects.get(pk=site.pk)
        assert site.is_zombie
        # The engine runs with live-restore (lab/up.sh): MariaDB's container runs on
        # without it and still answers; Caddy's admin API is reached through the engine.
        status, failing = health(api)
        assert (status, failing) == (503, ["docker", "caddy"])
    finally:
        lab_up()
    assert health(api) == (200, [])
    assert leftovers(infra, name) == []
