"""No password, key or token appears anywhere an operator (or a container's user) can look:
API answers, admin pages, job records, the worker's log, `docker inspect` and `docker logs`
of the site's containers and of MariaDB; not even when an error quotes one."""

from __future__ import annotations

import logging
import subprocess

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django_q.models import Task

from jobs.models import Job, JobStep
from sites.infra.errors import InfraError
from sites.infra.mariadb import MariaDBAdmin
from sites.models import Site
from tests.conftest import unique_name
from tests.integration.conftest import WORKER_LOG, leftovers, run_to_end, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(300)]

MARIADB_CONTAINER = "wpfleet-mariadb"  # lab/lib.sh


def panel_secrets() -> dict[str, str]:
    """The panel's own secrets; the control database's password only when it has one (MariaDB)."""
    found = {
        "SECRET_KEY": django_settings.SECRET_KEY,
        "db admin password": django_settings.WPFLEET_DB_ADMIN["password"],
        "control db password": connection.settings_dict["PASSWORD"],
    }
    assert found["SECRET_KEY"] and found["db admin password"], "the lab's .env must set these secrets"
    return {label: value for label, value in found.items() if value}


def docker_text(*argv: str) -> str:
    result = subprocess.run(["docker", *argv], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return (result.stdout + result.stderr).decode(errors="replace")


def superuser_client() -> Client:
    admin = get_user_model().objects.create_superuser("root-test", password=None)
    browser = Client()
    browser.force_login(admin)
    return browser


def pages_of(api, browser: Client, site: Site, job_id: int) -> dict[str, bytes]:
    """What the API and the admin show about a site and its job (a superuser sees the traceback)."""
    urls = {
        "api list": (api, "/api/sites"),
        "api site": (api, f"/api/sites/{site.name}"),
        "api job": (api, f"/api/jobs/{job_id}"),
        "api health": (api, "/api/health"),
        "admin list": (browser, "/admin/sites/site/"),
        "admin site": (browser, f"/admin/sites/site/{site.pk}/change/"),
        "admin job list": (browser, "/admin/jobs/job/"),
        "admin job": (browser, f"/admin/jobs/job/{job_id}/change/"),
        "admin history": (browser, f"/admin/sites/site/{site.pk}/history/"),
    }
    pages = {}
    for label, (client, url) in urls.items():
        response = client.get(url)
        assert response.status_code == 200, (label, response.status_code)
        pages[label] = response.content
    return pages


def job_records(name: str) -> list[str]:
    return [
        *(
            f"{error} {traceback}"
            for error, traceback in Job.objects.filter(subject_name=name).values_list("error", "traceback")
        ),
        *JobStep.objects.filter(job__subject_name=name).values_list("error", flat=True),
        *(f"{task.args} {task.kwargs} {task.result}" for task in Task.objects.all()),
    ]


def assert_nowhere(secrets: dict[str, str], places: dict[str, bytes | str]) -> None:
    for label, secret in secrets.items():
        for place, text in places.items():
            data = text if isinstance(text, bytes) else text.encode()
            assert secret.encode() not in data, f"{label} in {place}"


def test_no_secret_appears_in_logs_job_records_api_admin_or_docker(api, token, infra, worker_cluster):
    log_start = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    name = unique_name("sec")
    assert api.post("/api/sites", {"site": name}).status_code == 202
    site = Site.objects.get(name=name)
    wait_for(lambda: Site.objects.get(pk=site.pk).status == Site.Status.ACTIVE, timeout=120, message="ACTIVE")
    site.refresh_from_db()
    secrets = {"site db password": site.db_password, "api token": token, **panel_secrets()}
    assert site.db_password

    places: dict[str, bytes | str] = {}
    # What Docker shows anyone who can talk to it: the whole inspect (Config.Env, Args,
    # mounts, labels) and the logs of the site's containers and of MariaDB.
    for container in (site.names.php, site.names.nginx, MARIADB_CONTAINER):
        places[f"docker inspect {container}"] = docker_text("inspect", container)
        places[f"docker logs {container}"] = docker_text("logs", container)
    assert "WORDPRESS_DB_PASSWORD_FILE" in places[f"docker inspect {site.names.php}"]

    job_id = site.last_job_id
    places.update(pages_of(api, superuser_client(), site, job_id))
    assert api.delete(f"/api/sites/{name}").status_code == 202
    wait_for(lambda: not Site.objects.filter(pk=site.pk).exists(), timeout=120, message="deleted")
    places["api deleted job"] = api.get(f"/api/jobs/{job_id}").content

    places.update({f"job record {i}": record for i, record in enumerate(job_records(name))})
    with open(WORKER_LOG, "rb") as log:
        log.seek(log_start)
        places["worker log"] = log.read()
    assert f"job {job_id}: done".encode() in places["worker log"]  # the log is the one that ran the job
    assert_nowhere(secrets, places)
    assert leftovers(infra, name) == []


def test_an_error_quoting_secrets_is_redacted_in_every_record_log_and_page(
    make_site, api, token, infra, monkeypatch, caplog
):
    """A server that echoes a rejected statement (MariaDB's "near '...'") quotes what it was
    given: here the site's password and the secrets the panel holds for talking to it and
    signing (the control database's password never reaches that server). Nothing shows them."""
    secrets: dict[str, str] = {}
    quotable = [django_settings.SECRET_KEY, django_settings.WPFLEET_DB_ADMIN["password"]]
    real = MariaDBAdmin.ensure_site_database

    def echoing(self, site, database, user, host, password, *args, **kwargs):
        real(self, site, database, user, host, password, *args, **kwargs)
        secrets["site db password"] = password
        quoted = " ".join(f"'{value}'" for value in (password, *quotable))
        raise InfraError("mariadb", f"(1064) You have an error in your SQL syntax; near 'IDENTIFIED BY {quoted}'")

    monkeypatch.setattr(MariaDBAdmin, "ensure_site_database", echoing)
    caplog.set_level(logging.INFO)
    site = make_site(run=False, max_attempts=2)
    job = run_to_end(site.current_job_id)
    assert (job.status, job.attempts) == (Job.Status.FAILED, 2)
    assert secrets["site db password"] == Site.objects.get(pk=site.pk).db_password
    secrets.update(panel_secrets(), **{"api token": token})

    # The error was recorded, with every secret in it replaced.
    step = job.steps.get(attempt=2, name="database", phase="apply")
    assert step.outcome == JobStep.Outcome.FAILED
    assert step.error.count("[redacted]") == 3, step.error
    for record in (step.error, job.error, job.traceback):
        assert "near 'IDENTIFIED BY '[redacted]' '[redacted]'" in record, record
    assert "InfraError" in job.traceback
    logged = caplog.text
    assert f"job {job.pk}: attempt 2 failed" in logged and "[redacted]" in logged

    places: dict[str, bytes | str] = {"log": logged}
    places.update(pages_of(api, superuser_client(), Site.objects.get(pk=site.pk), job.pk))
    assert b"[redacted]" in places["admin job"] and b"[redacted]" in places["api job"]
    places.update({f"job record {i}": record for i, record in enumerate(job_records(site.name))})
    assert_nowhere(secrets, places)
    assert leftovers(infra, site.name) == []
