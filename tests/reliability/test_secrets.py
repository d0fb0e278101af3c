"""After a full create/delete cycle, no password or token appears anywhere an operator can look."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_q.models import Task

from jobs.models import Job, JobStep
from sites.models import Site
from tests.conftest import unique_name
from tests.integration.conftest import WORKER_LOG, leftovers, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(300)]


def test_no_secret_appears_in_logs_job_records_api_or_admin(api, token, infra, worker_cluster, settings):
    log_start = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    name = unique_name("sec")
    assert api.post("/api/sites", {"site": name}).status_code == 202
    site = Site.objects.get(name=name)
    password = site.db_password
    wait_for(lambda: Site.objects.get(pk=site.pk).status == Site.Status.ACTIVE, timeout=120, message="ACTIVE")

    admin = get_user_model().objects.create_superuser("root-test", password=None)
    browser = Client()
    browser.force_login(admin)
    pages = {
        "api list": api.get("/api/sites").content,
        "api site": api.get(f"/api/sites/{name}").content,
        "api job": api.get(f"/api/jobs/{site.last_job_id}").content,
        "admin list": browser.get("/admin/sites/site/").content,
        "admin site": browser.get(f"/admin/sites/site/{site.pk}/change/").content,
        "admin job": browser.get(f"/admin/jobs/job/{site.last_job_id}/change/").content,
        "admin history": browser.get(f"/admin/sites/site/{site.pk}/history/").content,
    }
    job_id = site.last_job_id
    assert api.delete(f"/api/sites/{name}").status_code == 202
    wait_for(lambda: not Site.objects.filter(pk=site.pk).exists(), timeout=120, message="deleted")
    pages["api deleted job"] = api.get(f"/api/jobs/{job_id}").content

    records = [
        *Job.objects.filter(subject_name=name).values_list("error", "traceback"),
        *JobStep.objects.filter(job__site_name=name).values_list("error", flat=True),
        *(f"{task.args} {task.kwargs} {task.result}" for task in Task.objects.all()),
    ]
    with open(WORKER_LOG, "rb") as log:
        log.seek(log_start)
        worker_log = log.read()
    secrets = {"db password": password, "api token": token, "db admin password": settings.WPFLEET_DB_ADMIN["password"]}
    for label, secret in secrets.items():
        for page, body in pages.items():
            assert secret.encode() not in body, f"{label} in {page}"
        assert secret.encode() not in worker_log, f"{label} in the worker log"
        assert all(secret not in str(record) for record in records), f"{label} in job records"
    assert leftovers(infra, name) == []
