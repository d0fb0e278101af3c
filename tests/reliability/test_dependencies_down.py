"""A dependency that is down fails the job with its name, leaves nothing, and the panel keeps answering."""

from __future__ import annotations

import pytest

from jobs.models import Job
from sites.models import Site
from tests.integration.conftest import leftovers

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(300)]

FAULTS_INJECTED: list[str] = []


def break_docker(settings):
    settings.WPFLEET_DOCKER_HOST = "unix:///run/wpfleet-no-such-engine.sock"


def break_mariadb(settings):
    settings.WPFLEET_DB_ADMIN = {**settings.WPFLEET_DB_ADMIN, "port": 1, "connect_timeout": 2}


def break_caddy(settings):
    settings.WPFLEET_CADDY_CONTAINER = "caddy-is-gone"


@pytest.mark.parametrize(
    "dependency,break_it", [("docker", break_docker), ("mariadb", break_mariadb), ("caddy", break_caddy)]
)
def test_a_job_fails_naming_the_dependency_that_is_down_and_leaves_nothing(
    dependency, break_it, make_site, infra, api, settings
):
    real = {key: getattr(settings, key) for key in ("WPFLEET_DOCKER_HOST", "WPFLEET_DB_ADMIN", "WPFLEET_CADDY_CONTAINER")}
    settings.WPFLEET_RETRY_BACKOFF_SECONDS = 0.05
    break_it(settings)
    FAULTS_INJECTED.append(dependency)

    site = make_site(max_attempts=2)
    job = site.last_job
    assert job.status == Job.Status.FAILED and job.is_final and job.attempts == 2
    assert job.error.split(" failed: ", 1)[1].startswith(f"{dependency}:"), job.error

    # The API keeps answering; health names what is down.
    assert api.get("/api/sites").status_code == 200
    health = api.get("/api/health")
    assert health.status_code == 503
    # Caddy runs on the Docker engine: with the engine down its state is unknown too.
    expected = ["docker", "caddy"] if dependency == "docker" else [dependency]
    assert health.json()["failing"] == expected

    for key, value in real.items():
        setattr(settings, key, value)
    assert leftovers(infra, site.name) == []
    assert api.get("/api/health").status_code == 200
    assert Site.objects.get(pk=site.pk).is_zombie


def test_health_is_200_when_everything_answers(api, infra):
    body = api.get("/api/health").json()
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"docker", "mariadb", "caddy", "control_db"}


def test_report_faults_injected():
    print(f"\ndependency faults injected: {len(FAULTS_INJECTED)} ({', '.join(FAULTS_INJECTED)})")
