"""Day-two operations in the operators' console: suspend and resume, PHP and the
disk quota, usage, logs and cron, through the Django test client, without the lab.

Everything goes through the services the API uses: their refusals (a bad
value, a site in the wrong state) are checked with the real services, which
refuse before touching Docker. What would read Docker (the logs, the live
resources) is replaced here.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job
from sites.admin import presenters
from sites.infra.errors import InfraError
from sites.models import Site
from sites.services import SiteNotActive, change_settings, create_site, resume_site
from tests.conftest import user_in_group

pytestmark = pytest.mark.django_db

SITES = reverse("admin:sites_site_changelist")
GB = 1024**3
MB = 1024**2


@pytest.fixture(autouse=True)
def lab_is_down(monkeypatch, settings):
    """Nothing answers; the site's page does not probe its resources (test_admin.py covers that)."""
    nowhere = "unix:///nonexistent/wpfleet-admin-test.sock"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    settings.WPFLEET_DOCKER_HOST = nowhere
    settings.WPFLEET_DB_ADMIN = {**settings.WPFLEET_DB_ADMIN, "host": "127.0.0.1", "port": 1, "connect_timeout": 1}
    settings.WPFLEET_QUOTA_ROOT = ""  # the quota check uses the usage last collected
    settings.WPFLEET_DISK_QUOTA = 2 * GB  # a new site's quota
    monkeypatch.setattr(presenters, "render_resources", lambda site: "")


@pytest.fixture
def operator(client):
    client.force_login(user_in_group("operator", "Site operators"))
    return client


@pytest.fixture
def viewer(client):
    client.force_login(user_in_group("viewer", "Site viewers"))
    return client


def url(name: str, site: Site, *args: object) -> str:
    return reverse(f"admin:sites_site_{name}", args=[site.pk, *args])


def site_page(site: Site) -> str:
    return url("change", site)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def active_site(name: str, **fields: object) -> Site:
    """A site whose provisioning finished: live, and no job holds it."""
    site = create_site(name)
    Job.objects.filter(pk=site.current_job_id).update(status=Job.Status.DONE, attempts=1, finished_at=timezone.now())
    Site.objects.filter(pk=site.pk).update(**{"current_job": None, "status": Site.Status.ACTIVE, **fields})
    site.refresh_from_db()
    return site


def suspended_site(name: str, **fields: object) -> Site:
    return active_site(name, status=Site.Status.SUSPENDED, **fields)


def flagged(settings) -> dict[str, object]:
    return {"cron_failures": settings.WPFLEET_CRON_MAX_FAILURES, "cron_error": "exit 255: PHP Fatal error: boom"}


def act(client, action: str, sites: list[Site], **extra):
    data = {"action": action, "_selected_action": [site.pk for site in sites], "index": 0, **extra}
    return client.post(SITES, data, follow=True)


def jobs_of(site: Site, job_type: str) -> list[Job]:
    return list(Job.objects.filter(subject_name=site.name, type=job_type))


# --- who may: a viewer sees, an operator acts -------------------------------------------------


def test_a_viewer_sees_the_day_two_panels_without_any_button_and_every_post_is_refused(viewer, settings):
    site = active_site("looks", **flagged(settings))
    body = viewer.get(site_page(site)).content.decode()
    for panel in ("Status", "Usage", "PHP", "Disk", "Cron", "Logs"):
        assert f"<h2>{panel}</h2>" in body, panel
    assert "PHP 8.2" in body and "memory_limit" in body and "Cron flagged" in body
    for button in ("Suspend the site", "Resume the site", "Change PHP", "Change the quota", "Clear the flag"):
        assert button not in body, button
    posts = [
        url("suspend", site),
        url("resume", site),
        url("php", site),
        url("disk_quota", site),
        url("clear_cron_flag", site),
    ]
    for target in posts:
        assert viewer.post(target, {"memory_limit": "512M", "disk_quota": "5G"}).status_code == 403, target
    assert viewer.get(url("php", site)).status_code == 403
    assert viewer.get(SITES).context["action_form"] is None, "no action at all for a viewer"
    act(viewer, "suspend_sites", [site], post="yes")
    site.refresh_from_db()
    assert site.current_job_id is None and site.cron_flagged and not LogEntry.objects.exists()


def test_an_operator_sees_the_buttons_that_work_in_the_sites_state(operator, settings):
    live = active_site("live", **flagged(settings))
    body = operator.get(site_page(live)).content.decode()
    assert "Suspend the site" in body and "Resume the site" not in body
    assert "Change PHP" in body and "Change the quota" in body and "Clear the flag and run again soon" in body
    asleep = suspended_site("asleep")
    body = operator.get(site_page(asleep)).content.decode()
    assert "Resume the site" in body and "Suspend the site" not in body
    assert "Change PHP" not in body, "a settings job needs an active site"
    assert "wpf-suspended" in body


def test_the_panels_forms_are_not_inside_the_admins_own_form(operator):
    # A browser ignores a <form> opened inside another: the buttons would post the admin's form.
    body = operator.get(site_page(active_site("forms"))).content.decode()
    start = body.index('id="site_form"')
    end = body.index("</form>", start)
    assert "<form" not in body[start:end]
    assert body.index('class="wpf-panels"') > end


# --- suspend and resume --------------------------------------------------------------------


def test_an_operators_suspend_post_opens_a_suspend_job(operator, django_capture_on_commit_callbacks):
    site = active_site("pause")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(url("suspend", site), follow=True)
    site.refresh_from_db()
    job = site.current_job
    assert job.type == Site.JobType.SUSPEND and job.status == Job.Status.PENDING
    assert response.redirect_chain[-1][0] == site_page(site)
    assert f"Suspending pause (job #{job.pk})" in messages_of(response)[0]
    assert LogEntry.objects.get(object_id=str(site.pk)).change_message == f"Suspend started (job #{job.pk})."


def test_suspend_and_resume_refuse_a_get(operator):
    site = active_site("noget")
    assert operator.get(url("suspend", site)).status_code == 403
    assert operator.get(url("resume", site)).status_code == 403
    assert Site.objects.get(pk=site.pk).current_job_id is None


def test_resume_of_an_active_site_is_refused_with_the_services_message(operator):
    site = active_site("awake")
    with pytest.raises(SiteNotActive) as refused:
        resume_site(site)
    response = operator.post(url("resume", site), follow=True)
    assert messages_of(response) == [str(refused.value)]
    assert "only a suspended site resumes" in str(refused.value)
    assert not jobs_of(site, Site.JobType.RESUME) and not LogEntry.objects.exists()


def test_an_operator_resumes_a_suspended_site(operator):
    site = suspended_site("wake")
    response = operator.post(url("resume", site), follow=True)
    site.refresh_from_db()
    assert site.current_job.type == Site.JobType.RESUME
    assert messages_of(response) == [f"Resuming wake (job #{site.current_job_id})."]


def test_a_busy_site_is_not_suspended_and_says_why(operator):
    site = create_site("building")
    Site.objects.filter(pk=site.pk).update(status=Site.Status.ACTIVE)
    assert "Suspend the site" not in operator.get(site_page(site)).content.decode()
    response = operator.post(url("suspend", site), follow=True)
    assert "already has a job in progress" in messages_of(response)[0]
    assert not jobs_of(site, Site.JobType.SUSPEND)


# --- bulk actions --------------------------------------------------------------------------------


def test_bulk_suspend_asks_first_then_suspends_the_active_idle_sites(operator):
    first, second = active_site("first"), active_site("second")
    asleep = suspended_site("asleep")
    busy = create_site("busy")
    Site.objects.filter(pk=busy.pk).update(status=Site.Status.ACTIVE)
    response = act(operator, "suspend_sites", [first, second, asleep, busy])
    assert response.templates[0].name == "wpfleet/confirm_action.html"
    body = response.content.decode()
    assert "Are you sure you want to suspend 2 sites?" in body and "503" in body and "kept" in body
    assert "skipped: not active" in body and "skipped: job in progress" in body
    assert not Job.objects.filter(type=Site.JobType.SUSPEND).exists()

    response = act(operator, "suspend_sites", [first, second, asleep, busy], post="yes")
    assert messages_of(response) == [
        "2 sites queued for suspension; 2 skipped: not active (asleep); job in progress (busy)"
    ]
    assert {job.subject_name for job in Job.objects.filter(type=Site.JobType.SUSPEND)} == {"first", "second"}
    assert LogEntry.objects.filter(change_message__startswith="Suspend started").count() == 2


def test_bulk_resume_resumes_the_suspended_sites_and_skips_the_others(operator):
    one, two = suspended_site("one"), suspended_site("two")
    live = active_site("live")
    response = act(operator, "resume_sites", [one, two, live])
    assert messages_of(response) == ["2 sites queued to resume; 1 skipped: not suspended (live)"]
    assert {job.subject_name for job in Job.objects.filter(type=Site.JobType.RESUME)} == {"one", "two"}
    assert LogEntry.objects.filter(change_message__startswith="Resume started").count() == 2


def test_bulk_clear_cron_flag_clears_the_flagged_sites(operator, settings):
    stuck = active_site("stuck", **flagged(settings))
    fine = active_site("fine", cron_failures=1)
    response = act(operator, "clear_cron_flags", [stuck, fine])
    assert messages_of(response) == ["1 cron flag cleared; 1 skipped: cron not flagged (fine)"]
    stuck.refresh_from_db()
    fine.refresh_from_db()
    assert stuck.cron_failures == 0 and stuck.cron_error == "" and stuck.cron_due_at is not None
    assert fine.cron_failures == 1
    assert LogEntry.objects.filter(object_id=str(stuck.pk)).count() == 1


# --- PHP and the disk quota ------------------------------------------------------------------


def php_form(site: Site, **changes: str) -> dict[str, str]:
    """The PHP form as the site's page fills it, with ``changes``."""
    return {"php_version": site.php_version, **{k: str(v) for k, v in site.php_values.items()}, **changes}


@pytest.mark.parametrize(
    "field, value, service_values",
    [
        ("memory_limit", "9G", {"php": {"memory_limit": "9G"}}),
        ("memory_limit", "lots", {"php": {"memory_limit": "lots"}}),
        ("max_execution_time", "0", {"php": {"max_execution_time": 0}}),
        ("max_execution_time", "soon", {"php": {"max_execution_time": "soon"}}),
        ("post_max_size", "2M", {"php": {"post_max_size": "2M"}}),
        ("php_version", "5.6", {"php_version": "5.6"}),
    ],
)
def test_a_bad_php_value_shows_the_services_message_and_opens_no_job(operator, field, value, service_values):
    site = active_site("badphp")
    with pytest.raises(ValueError) as refused:
        change_settings(site, service_values)
    response = operator.post(url("php", site), php_form(site, **{field: value}))
    assert response.status_code == 200
    assert response.context["form"].errors[field] == [str(refused.value)]
    assert "Please correct the error below." in response.content.decode()
    assert not jobs_of(site, Site.JobType.SETTINGS) and not LogEntry.objects.exists()
    assert Site.objects.get(pk=site.pk).current_job_id is None


def test_a_php_change_sends_only_what_changed_as_one_settings_job(operator):
    site = active_site("tune", php_settings={"max_execution_time": 120})
    response = operator.post(url("php", site), php_form(site, memory_limit="512m", upload_max_filesize=" 32M "))
    assert response.status_code == 302 and response.url == site_page(site)
    [job] = jobs_of(site, Site.JobType.SETTINGS)
    assert job.params == {"php": {"max_execution_time": 120, "memory_limit": "512M", "upload_max_filesize": "32M"}}
    page = operator.get(site_page(site))
    assert f"Changing memory_limit 512M, upload_max_filesize 32M (job #{job.pk})." in messages_of(page)
    assert "(set for this site)" in page.content.decode(), "the site's own value is told from the defaults"


def test_a_php_post_naming_one_value_changes_only_that(operator):
    site = active_site("partial")
    operator.post(url("php", site), {"max_execution_time": "90"})
    [job] = jobs_of(site, Site.JobType.SETTINGS)
    assert job.params == {"php": {"max_execution_time": 90}}


def test_a_php_form_that_changes_nothing_says_so_and_opens_no_job(operator):
    site = active_site("same")
    response = operator.post(url("php", site), php_form(site, memory_limit="256M"), follow=True)
    assert messages_of(response) == ["PHP settings: nothing changed."]
    assert not jobs_of(site, Site.JobType.SETTINGS)


def test_the_php_form_offers_the_configured_versions_and_switches(operator, settings):
    settings.WPFLEET_PHP_VERSIONS = {"8.2": "wordpress:php8.2-fpm", "8.4": "wpfleet/wordpress:php8.4-fpm"}
    site = active_site("newer")
    body = operator.get(site_page(site)).content.decode()
    assert '<option value="8.4">PHP 8.4</option>' in body
    operator.post(url("php", site), php_form(site, php_version="8.4"))
    [job] = jobs_of(site, Site.JobType.SETTINGS)
    assert job.params == {"php_version": "8.4"}


def test_a_settings_change_of_a_suspended_site_is_refused_with_the_services_message(operator):
    site = suspended_site("sleeping")
    response = operator.post(url("php", site), php_form(site, memory_limit="512M"), follow=True)
    assert messages_of(response) == ["site sleeping is suspended: only an active site is changed"]
    assert not jobs_of(site, Site.JobType.SETTINGS)


def test_the_disk_quota_changes_through_the_service_and_its_refusals_show_on_the_form(operator):
    site = active_site("disk", usage_disk=700 * MB, usage_at=timezone.now())
    body = operator.get(site_page(site)).content.decode()
    assert "700 MB" in body and "2 GB" in body and "34.2 %" in body

    too_small = operator.post(url("disk_quota", site), {"disk_quota": "500M"})
    with pytest.raises(ValueError) as refused:
        change_settings(site, {"disk_quota": "500M"})
    assert too_small.context["form"].errors["disk_quota"] == [str(refused.value)]
    assert "less than the" in str(refused.value)
    assert not jobs_of(site, Site.JobType.SETTINGS)

    operator.post(url("disk_quota", site), {"disk_quota": "5G"})
    [job] = jobs_of(site, Site.JobType.SETTINGS)
    assert job.params == {"disk_quota": 5 * GB}


# --- usage and the list ------------------------------------------------------------------


def test_usage_says_not_collected_yet_until_the_worker_read_it(operator):
    site = active_site("fresh")
    assert "Not collected yet" in operator.get(site_page(site)).content.decode()
    Site.objects.filter(pk=site.pk).update(
        usage_memory=123 * MB + 456_789,
        usage_cpu=12.34,
        usage_disk=GB,
        usage_requests=4321,
        usage_at=timezone.now() - dt.timedelta(minutes=3),
    )
    body = operator.get(site_page(site)).content.decode()
    assert "123 MB" in body and "12.3 % of one CPU" in body and "1 GB / 2 GB" in body
    assert "4321 in the last hour" in body and "3\xa0minutes ago" in body


def column(client, name: str) -> int:
    return client.get(SITES).context["cl"].list_display.index(name)


def listed(client, query: str) -> list[str]:
    return [site.name for site in client.get(SITES + query).context["cl"].result_list]


def test_the_list_shows_and_sorts_by_memory_and_disk(operator):
    active_site("small", usage_memory=50 * MB, usage_disk=100 * MB)
    active_site("big", usage_memory=300 * MB, usage_disk=1900 * MB)
    active_site("middle", usage_memory=120 * MB, usage_disk=GB)
    body = operator.get(SITES).content.decode()
    assert "300 MB" in body and "1.9 GB / 2 GB" in body and "8.2" in body
    assert 'class="wpf-full"' in body, "a site at 90 % of its quota stands out"
    memory, disk = column(operator, "memory"), column(operator, "disk")
    assert listed(operator, f"?o={memory}") == ["small", "middle", "big"]
    assert listed(operator, f"?o=-{memory}") == ["big", "middle", "small"]
    assert listed(operator, f"?o={disk}") == ["small", "middle", "big"]
    assert listed(operator, f"?o=-{disk}") == ["big", "middle", "small"]


def test_the_cron_filter_lists_the_flagged_sites(operator, settings):
    active_site("flagged", **flagged(settings))
    active_site("failing", cron_failures=settings.WPFLEET_CRON_MAX_FAILURES - 1)
    active_site("fine")
    assert listed(operator, "?cron_flagged=yes") == ["flagged"]
    assert sorted(listed(operator, "?cron_flagged=no")) == ["failing", "fine"]
    assert "Cron flagged" in operator.get(SITES).content.decode(), "the badge beside the status"


def test_the_status_filter_offers_suspended(operator):
    suspended_site("asleep")
    active_site("awake")
    assert listed(operator, "?status__exact=SUSPENDED") == ["asleep"]


# --- cron --------------------------------------------------------------------------------


def test_the_cron_panel_shows_runs_failures_and_clears_the_flag(operator, settings):
    ran = timezone.now() - dt.timedelta(minutes=7)
    site = active_site("cronny", cron_ran_at=ran, **flagged(settings))
    body = operator.get(site_page(site)).content.decode()
    assert f"{settings.WPFLEET_CRON_MAX_FAILURES} in a row" in body and "PHP Fatal error: boom" in body
    assert "not run while flagged" in body and ran.strftime("%Y-%m-%d %H:%M:%S") in body
    response = operator.post(url("clear_cron_flag", site), follow=True)
    assert messages_of(response) == ["Cron flag of cronny cleared: its cron runs again at the next pass."]
    site.refresh_from_db()
    assert site.cron_failures == 0 and not site.cron_flagged and site.cron_due_at is not None
    assert "Clear the flag" not in response.content.decode()
    again = operator.post(url("clear_cron_flag", site), follow=True)
    assert messages_of(again) == ["The cron of cronny has no failures to clear."]
    assert LogEntry.objects.filter(object_id=str(site.pk)).count() == 1


# --- logs -------------------------------------------------------------------------------------


@pytest.fixture
def logs(monkeypatch):
    """sites.ops.logs.site_logs replaced: what it was asked, and lines to answer."""
    calls: list[tuple[str, str, int]] = []

    def site_logs(site: Site, source: str, lines: int) -> list[str]:
        calls.append((site.name, source, lines))
        return [f"2025-01-01T00:00:0{i}Z {source} line {i} <b>" for i in range(min(lines, 3))]

    monkeypatch.setattr("sites.ops.logs.site_logs", site_logs)
    return calls


def test_the_sites_page_links_to_its_logs_without_reading_them(operator, logs):
    site = active_site("quiet")
    body = operator.get(site_page(site)).content.decode()
    assert url("logs", site) in body and "Show the logs" in body
    assert logs == []


def test_the_logs_page_shows_the_latest_lines(viewer, logs):
    site = active_site("noisy")
    response = viewer.get(url("logs", site), {"source": "php", "lines": "20"})
    body = response.content.decode()
    assert response.status_code == 200 and logs == [("noisy", "php", 20)]
    assert '<pre class="wpf-log">' in body and "php line 2 &lt;b&gt;" in body, "escaped"
    assert '<option value="php" selected>' in body and 'value="20"' in body and "Refresh" in body
    assert "no-store" in response["Cache-Control"]
    viewer.get(url("logs", site))
    assert logs[-1] == ("noisy", "nginx", 100), "nginx and 100 lines unless asked"


@pytest.mark.parametrize(
    "asked, read, warned",
    [("1000000", None, True), ("0", 1, True), ("-5", 100, True), ("many", 100, True), ("250", 250, False)],
)
def test_the_logs_page_bounds_the_number_of_lines(operator, logs, settings, asked, read, warned):
    read = settings.WPFLEET_LOG_LINES_MAX if read is None else read
    site = active_site("bounded")
    response = operator.get(url("logs", site), {"lines": asked})
    assert response.status_code == 200
    assert logs == [("bounded", "nginx", read)]
    assert any(f"{read}" in message for message in messages_of(response)) == warned


def test_the_logs_page_refuses_an_unknown_source_without_reading(operator, logs):
    site = active_site("which")
    response = operator.get(url("logs", site), {"source": "../../etc/passwd"})
    assert response.status_code == 200 and logs == []
    assert messages_of(response) == ["source must be one of nginx, php."]


def test_a_docker_failure_on_the_logs_page_is_a_message_not_a_500(operator, monkeypatch):
    site = active_site("broken")

    def failing(site: Site, source: str, lines: int) -> list[str]:
        raise InfraError("docker", "container wpfleet-broken-nginx not found")

    monkeypatch.setattr("sites.ops.logs.site_logs", failing)
    response = operator.get(url("logs", site))
    assert response.status_code == 200
    assert messages_of(response) == [
        "The nginx log could not be read: docker: container wpfleet-broken-nginx not found"
    ]
    assert '<pre class="wpf-log">' not in response.content.decode()


def test_the_logs_page_with_the_engine_down_is_a_message_not_a_500(operator):
    site = active_site("nodocker")
    response = operator.get(url("logs", site))
    assert response.status_code == 200
    assert messages_of(response)[0].startswith("The nginx log could not be read: ")
