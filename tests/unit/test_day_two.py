"""Day-two operations without the lab: what the API accepts and refuses, and the jobs it opens (issue #13)."""

from __future__ import annotations

import pytest

from jobs.models import InvalidTransition, Job
from sites.models import Site
from sites.models.php import PHP_DEFAULTS
from sites.provisioning.templates import nginx_server_block, php_ini
from tests.conftest import token_client, user_in_group

pytestmark = pytest.mark.django_db(transaction=True)

IMAGES = {"8.2": "wpfleet-lab/wordpress:php8.2-fpm-r0000000000000000", "8.4": "wpfleet-lab/wordpress:php8.4-fpm-r1"}


@pytest.fixture(autouse=True)
def offered_versions(settings):
    settings.WPFLEET_PHP_VERSIONS = IMAGES
    settings.WPFLEET_PHP_DEFAULT_VERSION = "8.2"
    settings.WPFLEET_QUOTA_ROOT = ""  # usage as last collected, no quota filesystem asked


def site(name: str = "alpha", status: str = Site.Status.ACTIVE, **fields) -> Site:
    return Site.objects.create(name=name, domain=f"{name}.wpfleet.test", status=status, **fields)


def nothing_opened(name: str = "alpha") -> bool:
    return not Job.objects.exists() and Site.objects.get(name=name).current_job_id is None


# --- PATCH /api/sites/<name>: PHP version, php.ini, disk quota ------------------------


def test_a_php_version_change_opens_a_settings_job_and_the_site_keeps_its_version_until_done(api):
    site()
    answer = api.patch("/api/sites/alpha", {"php_version": "8.4"}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["php_version"] == "8.2"  # what serves now
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    assert (job.type, job.params) == (Site.JobType.SETTINGS, {"php_version": "8.4"})


def test_php_settings_merge_into_the_sites_own_and_keep_only_what_differs_from_the_defaults(api):
    site(php_settings={"max_execution_time": 90})
    answer = api.patch(
        "/api/sites/alpha", {"php": {"memory_limit": "512m", "upload_max_filesize": "64M"}}, format="json"
    )
    assert answer.status_code == 202, answer.content
    job = Job.objects.get(pk=answer.json()["job"]["id"])
    # 64M is the default upload size: not kept; 512m is written as PHP writes it.
    assert job.params == {"php": {"max_execution_time": 90, "memory_limit": "512M"}}


@pytest.mark.parametrize(
    "body,message",
    [
        ({"php_version": "7.4"}, "php_version must be one of 8.2, 8.4"),
        ({"php_version": 8.4}, "php_version: Not a valid string."),
        ({"php": {"memory_limit": "8G"}}, "memory_limit must be between 64M and 512M"),
        ({"php": {"memory_limit": "lots"}}, "memory_limit must be a size"),
        ({"php": {"max_execution_time": 0}}, "max_execution_time must be a whole number of seconds, 1 to 300"),
        ({"php": {"max_execution_time": True}}, "max_execution_time must be a whole number"),
        ({"php": {"display_errors": "On"}}, "unknown php setting(s): display_errors"),
        ({"php": {"upload_max_filesize": "128M", "post_max_size": "64M"}}, "post_max_size must be at least"),
        ({"php": {}}, "php must be an object"),
        ({"php": "memory_limit=1G"}, "php must be an object"),
        ({"disk_quota": "1M"}, "disk_quota must be between 256M and"),
        ({"disk_quota": "a lot"}, "disk_quota must be a size"),
    ],
)
def test_a_bad_value_gets_a_400_saying_why_and_opens_no_job(api, body, message):
    site()
    answer = api.patch("/api/sites/alpha", body, format="json")
    assert answer.status_code == 400, answer.content
    assert message in answer.json()["detail"]
    assert nothing_opened()


def test_a_quota_below_what_the_files_use_is_refused(api):
    site(usage_disk=900 * 1024**2)
    answer = api.patch("/api/sites/alpha", {"disk_quota": "512M"}, format="json")
    assert answer.status_code == 400
    assert "less than the" in answer.json()["detail"]
    assert nothing_opened()
    assert api.patch("/api/sites/alpha", {"disk_quota": "1G"}, format="json").status_code == 202


def test_an_unknown_field_is_refused(api):
    site()
    answer = api.patch("/api/sites/alpha", {"php_version": "8.4", "ram": "1G"}, format="json")
    assert (answer.status_code, answer.json()["code"]) == (400, "unknown_field")
    assert nothing_opened()


def test_settings_of_a_site_that_is_not_active_are_refused_with_409(api):
    site(status=Site.Status.SUSPENDED)
    answer = api.patch("/api/sites/alpha", {"php_version": "8.4"}, format="json")
    assert (answer.status_code, answer.json()["code"]) == (409, "not_active")
    assert nothing_opened()


def test_the_site_shows_its_php_quota_usage_and_cron(api):
    site(php_settings={"memory_limit": "384M"}, usage_memory=12_000_000, usage_disk=80_000_000)
    body = api.get("/api/sites/alpha").json()
    assert body["php_version"] == "8.2"
    assert body["php"] == {**PHP_DEFAULTS, "memory_limit": "384M"}
    assert body["usage"]["memory"] == 12_000_000
    assert body["usage"]["disk_used"] == 80_000_000
    assert body["usage"]["disk_quota"] == body["disk_quota"] > 0
    assert body["cron"] == {"last_run": None, "next_run": None, "failures": 0, "flagged": False, "error": ""}


# --- suspend and resume ----------------------------------------------------------------


def test_suspend_opens_a_job_and_the_site_is_suspended_only_when_it_is_done(api):
    site()
    answer = api.post("/api/sites/alpha/suspend")
    assert answer.status_code == 202, answer.content
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.type == Site.JobType.SUSPEND
    assert Site.objects.get(name="alpha").status == Site.Status.ACTIVE


@pytest.mark.parametrize(
    "status,path",
    [
        (Site.Status.PROVISIONING, "suspend"),
        (Site.Status.SUSPENDED, "suspend"),
        (Site.Status.ACTIVE, "resume"),
        (Site.Status.DEPROVISIONING, "resume"),
    ],
)
def test_suspend_and_resume_of_a_site_in_another_state_get_409(api, status, path):
    site(status=status)
    answer = api.post(f"/api/sites/alpha/{path}")
    assert (answer.status_code, answer.json()["code"]) == (409, "not_active")
    assert nothing_opened()


def test_a_viewer_may_not_suspend_resume_or_change_settings_but_may_ask_for_logs():
    site()
    viewer = token_client(user_in_group("viewer", "Site viewers"))
    assert viewer.post("/api/sites/alpha/suspend").status_code == 403
    assert viewer.post("/api/sites/alpha/resume").status_code == 403
    assert viewer.patch("/api/sites/alpha", {"php_version": "8.4"}, format="json").status_code == 403
    assert nothing_opened()
    # (out of range: refused before any container is asked)
    assert viewer.get("/api/sites/alpha/logs?lines=0").status_code == 400


def test_only_an_active_site_can_be_suspended_and_only_a_suspended_one_resumed():
    active = site()
    active.mark_suspended()
    assert Site.objects.get(name="alpha").status == Site.Status.SUSPENDED
    with pytest.raises(InvalidTransition):
        active.mark_suspended()
    active.mark_resumed()
    with pytest.raises(InvalidTransition):
        active.mark_resumed()


# --- logs --------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["source=caddy", "lines=0", "lines=100000000", "lines=ten", "source=php&lines=-1"])
def test_a_logs_request_out_of_bounds_gets_400(api, query):
    site()
    assert api.get(f"/api/sites/alpha/logs?{query}").status_code == 400


# --- what nginx and PHP are given ---------------------------------------------------------


def test_php_ini_carries_the_sites_values_and_nginx_takes_bodies_up_to_post_max_size():
    ini = php_ini(values={"memory_limit": "300M", "max_execution_time": 45})
    assert "memory_limit = 300M\n" in ini and "max_execution_time = 45\n" in ini
    from sites.models.naming import SiteNames

    block = nginx_server_block(SiteNames("alpha"), body_max="24M")
    assert "client_max_body_size 24M;" in block
    assert "fastcgi_pass 127.0.0.1:9000;" in block
    # A PHP switch's next PHP-FPM listens on the other loopback port of nginx's namespace.
    switching = nginx_server_block(SiteNames("alpha"), php_port=9001)
    assert "fastcgi_pass 127.0.0.1:9001;" in switching and ":9000;" not in switching
