"""The operators' console, through the Django test client, without the lab.

The lab is made unreachable for every test here, so pages that read live state
must degrade instead of failing, and nothing can reach a real container.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django_q.models import OrmQ

from jobs.models import Job, JobStep
from sites.admin import presenters as admin_views
from sites.admin import sites as site_admin
from sites.models import Site
from sites.models.validation import NAME_RULE, taken_message
from sites.ops.cleanup import zombie_sites
from sites.provisioning.steps import RouteStep
from sites.services import SiteNameTaken, create_site, delete_site
from tests.conftest import shipped_group

pytestmark = pytest.mark.django_db

SITES = reverse("admin:sites_site_changelist")
ADD_SITE = reverse("admin:sites_site_add")
JOBS = reverse("admin:jobs_job_changelist")


@pytest.fixture(autouse=True)
def lab_is_down(monkeypatch, settings):
    """Nothing answers: no Docker engine at this socket, no MariaDB on port 1."""
    nowhere = "unix:///nonexistent/wpfleet-admin-test.sock"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    settings.WPFLEET_DOCKER_HOST = nowhere
    settings.WPFLEET_DB_ADMIN = {**settings.WPFLEET_DB_ADMIN, "host": "127.0.0.1", "port": 1, "connect_timeout": 1}


def site_page(site: Site) -> str:
    return reverse("admin:sites_site_change", args=[site.pk])


def job_page(job: Job) -> str:
    return reverse("admin:jobs_job_change", args=[job.pk])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def fail_for_good(site: Site, error: str = "step php failed: boom") -> Job:
    """The site's open job fails on its last attempt and lets go of the site, as the runner does."""
    Job.objects.filter(pk=site.current_job_id).update(
        status=Job.Status.FAILED,
        attempts=3,
        max_attempts=3,
        error=error,
        traceback="Traceback: boom",
        started_at=timezone.now() - dt.timedelta(seconds=5),
        finished_at=timezone.now(),
        next_attempt_at=None,
    )
    job = Job.objects.get(pk=site.current_job_id)
    Site.objects.filter(pk=site.pk).update(current_job=None)
    site.refresh_from_db()
    return job


def finish(site: Site) -> Site:
    Job.objects.filter(pk=site.current_job_id).update(status=Job.Status.DONE, attempts=1, finished_at=timezone.now())
    Site.objects.filter(pk=site.pk).update(current_job=None, status=Site.Status.ACTIVE)
    site.refresh_from_db()
    return site


def active_site(name: str) -> Site:
    return finish(create_site(name))


def zombie(name: str) -> Site:
    site = create_site(name)
    fail_for_good(site)
    return site


def deprovision_zombie(name: str) -> Site:
    site = active_site(name)
    delete_site(site)
    site.refresh_from_db()
    fail_for_good(site, "step php failed (undo): engine gone")
    return site


# --- adding a site ------------------------------------------------------------------------


def test_add_site_asks_for_the_name_and_optionally_wordpress_title_and_admin(admin_client):
    response = admin_client.get(ADD_SITE)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert list(form.fields) == ["name", "title", "admin_email", "admin_user"]
    assert [name for name, field in form.fields.items() if field.required] == []  # "name" is checked by the validator
    assert "db_password" not in response.content.decode()


def test_add_site_creates_the_site_and_its_provision_job_and_lands_on_its_page(
    admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(ADD_SITE, {"name": "blog", "_save": "Save"})
    site = Site.objects.get(name="blog")
    assert response.status_code == 302 and response.url == site_page(site)
    assert site.status == Site.Status.PROVISIONING and site.domain.startswith("blog.")
    job = site.current_job
    assert job.type == Site.JobType.PROVISION and job.status == Job.Status.PENDING and site.last_job_id == job.pk
    assert OrmQ.objects.count() == 1, "the job is queued for the workers once the transaction commits"

    page = admin_client.get(response.url)
    assert "is being built" in " ".join(messages_of(page))
    assert 'id="wpfleet-live"' in page.content.decode(), "the page follows the job while it is open"


@pytest.mark.parametrize("name", ["My-Site", "", " blog", "blog ", "a" * 33, "bl\x00og", "ünïcode"])
def test_add_site_with_an_invalid_name_shows_the_api_message_and_writes_nothing(admin_client, api, name):
    api_message = api.post("/api/sites", {"site": name}).json()["detail"]
    assert api_message == NAME_RULE
    response = admin_client.post(ADD_SITE, {"name": name, "_save": "Save"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == [api_message]
    assert escape(api_message) in response.content.decode()
    assert not Site.objects.exists() and not Job.objects.exists() and not LogEntry.objects.exists()


def test_add_site_with_a_reserved_name_shows_the_api_message_and_writes_nothing(admin_client, api):
    api_message = api.post("/api/sites", {"site": "caddy"}).json()["detail"]
    response = admin_client.post(ADD_SITE, {"name": "caddy", "_save": "Save"})
    assert response.context["adminform"].form.errors["name"] == [api_message]
    assert "reserved" in api_message
    assert not Site.objects.exists() and not Job.objects.exists() and not LogEntry.objects.exists()


def test_add_site_with_a_taken_name_shows_the_api_message(admin_client, api):
    create_site("taken")
    api_response = api.post("/api/sites", {"site": "taken"})
    assert api_response.status_code == 409
    response = admin_client.post(ADD_SITE, {"name": "taken", "_save": "Save"})
    assert response.status_code == 200
    assert (
        response.context["adminform"].form.errors["name"] == [api_response.json()["detail"]] == [taken_message("taken")]
    )
    assert Site.objects.count() == 1 and Job.objects.count() == 1 and not LogEntry.objects.exists()


def test_add_site_that_loses_the_race_for_its_name_shows_the_api_message(admin_client, monkeypatch):
    # Another request takes the name between the form's check and the insert.
    def taken_meanwhile(name, **wordpress):
        raise SiteNameTaken(name)

    monkeypatch.setattr(site_admin, "create_site", taken_meanwhile)
    response = admin_client.post(ADD_SITE, {"name": "racy", "_save": "Save"}, follow=True)
    assert taken_message("racy") in messages_of(response)
    assert not Site.objects.exists() and not LogEntry.objects.exists()


# --- the list ---------------------------------------------------------------------------


def test_the_changelist_shows_status_domain_link_latest_job_and_attempts(admin_client):
    live = active_site("live")
    broken = zombie("broken")
    body = admin_client.get(SITES).content.decode()
    assert f'href="https://{live.domain}/"' in body
    assert "wpf-active" in body and "Zombie" in body
    assert "step php failed: boom" in body, "what failed and why, at a glance"
    assert "3/3" in body
    assert f'href="https://{broken.domain}/"' not in body, "a site that is not live has no link"


def test_the_lists_of_ten_thousand_sites_and_jobs_take_a_fixed_number_of_queries(
    admin_client, django_assert_max_num_queries
):
    now = timezone.now()
    building = 10  # the newest sites are still being built: the first page follows them
    jobs = Job.objects.bulk_create(
        Job(
            subject_name=f"s{i}",
            type=Site.JobType.PROVISION,
            created_at=now,
            status=Job.Status.PROCESSING if i < building else Job.Status.DONE,
            attempts=1,
        )
        for i in range(10_000)
    )
    Site.objects.bulk_create(
        Site(
            name=f"s{i}",
            domain=f"s{i}.wpfleet.test",
            last_job=job,
            created_at=now - dt.timedelta(seconds=i),
            status=Site.Status.PROVISIONING if i < building else Site.Status.ACTIVE,
            current_job=job if i < building else None,
        )
        for i, job in enumerate(jobs)
    )
    for query in ["", "?o=4", "?zombie=yes", "?zombie=no&status__exact=ACTIVE", "?q=s99", "?p=150"]:
        # session, user, count, full count, one page of rows with their latest
        # jobs joined, the live marker's fingerprint of that page, one spare:
        # a bounded number of queries whatever the number of sites.
        with django_assert_max_num_queries(7):
            response = admin_client.get(SITES + query)
        assert response.status_code == 200, query
    assert len(admin_client.get(SITES).context["cl"].result_list) == 50
    for query in ["", "?status__exact=DONE&type__exact=PROVISION", "?o=-6"]:
        with django_assert_max_num_queries(6):
            assert admin_client.get(JOBS + query).status_code == 200, query


def test_the_list_follows_the_sites_being_built_on_its_page(admin_client):
    building = create_site("building")
    active_site("idle")
    response = admin_client.get(SITES)
    live = response.context["wpfleet_live"]
    assert "1 site on this page has a job running" in response.content.decode()
    first = admin_client.get(live["url"]).json()
    assert first["open"] is True and first["fingerprint"] == live["fingerprint"]
    finish(building)
    second = admin_client.get(live["url"]).json()
    assert second["open"] is False and second["fingerprint"] != first["fingerprint"]
    assert "wpfleet_live" not in admin_client.get(SITES).context, "nothing is being built: the list stays still"


def test_the_zombie_filter_lists_exactly_what_the_cleanup_would_remove(admin_client):
    zombie("zombie1")
    deprovision_zombie("zombie2")
    active_site("fine")
    create_site("building")
    retrying = create_site("retrying")
    Job.objects.filter(pk=retrying.current_job_id).update(
        status=Job.Status.WAITING, attempts=1, next_attempt_at=timezone.now() + dt.timedelta(minutes=1)
    )
    expected = set(zombie_sites().values_list("name", flat=True))
    assert expected == {"zombie1", "zombie2"}

    listed = {site.name for site in admin_client.get(SITES + "?zombie=yes").context["cl"].result_list}
    others = {site.name for site in admin_client.get(SITES + "?zombie=no").context["cl"].result_list}
    assert listed == expected
    assert others == {"fine", "building", "retrying"}
    # The badge in the list follows the same rule.
    for site in Site.objects.select_related("last_job"):
        assert site.is_zombie == (site.name in expected), site.name


def test_the_changelist_searches_by_name(admin_client):
    active_site("alpha")
    active_site("beta")
    names = [site.name for site in admin_client.get(SITES + "?q=alp").context["cl"].result_list]
    assert names == ["alpha"]


# --- a site's page ---------------------------------------------------------------------------


def test_a_sites_page_says_its_resources_are_unreachable_when_the_lab_is_down(admin_client):
    site = active_site("down")
    response = admin_client.get(site_page(site))
    assert response.status_code == 200
    body = response.content.decode()
    assert body.count('<td class="wpf-state">unreachable<') == 7, "every step that owns a resource"
    assert body.count("unreachable: docker: connect: engine unreachable") == 1, "the reason, once"
    assert "(volume, nginx, php, nginx_config, route)" in body, "naming what it hides"
    assert body.count("unreachable: mariadb: (2002)") == 1
    assert "(database, wordpress)" in body


def test_a_dependency_that_hangs_is_reported_without_holding_the_page(monkeypatch):
    def hanging(self, ctx, view):
        time.sleep(3)
        return []

    monkeypatch.setattr(RouteStep, "observe", hanging)
    rows, problems = admin_views.probe_resources(Site(name="slow", domain="slow.wpfleet.test"), budget=0.5)
    assert [row.state for row in rows if row.kind == "route"] == ["unreachable"]
    assert "no answer within 0.5 s (route)" in problems


def test_a_sites_page_shows_its_jobs_with_each_steps_timing_and_outcome(admin_client):
    site = create_site("steps")
    job = fail_for_good(site, "step nginx failed: port in use")
    start = timezone.now() - dt.timedelta(seconds=10)
    JobStep.objects.create(
        job=job,
        attempt=1,
        name="database",
        outcome="OK",
        started_at=start,
        finished_at=start + dt.timedelta(milliseconds=250),
    )
    JobStep.objects.create(
        job=job,
        attempt=1,
        name="nginx",
        outcome="FAILED",
        error="port in use",
        started_at=start + dt.timedelta(seconds=1),
        finished_at=start + dt.timedelta(seconds=3),
    )
    JobStep.objects.create(
        job=job,
        attempt=1,
        name="database",
        phase="undo",
        outcome="UNDONE",
        started_at=start + dt.timedelta(seconds=3),
        finished_at=start + dt.timedelta(seconds=4),
    )
    body = admin_client.get(site_page(site)).content.decode()
    assert "Attempt 1 of 3" in body
    assert "250 ms" in body and "2.0 s" in body
    assert "Undone" in body and "port in use" in body
    assert job_page(job) in body
    assert "Retry the failed job" in body, "a failed site offers the retry"
    assert 'id="wpfleet-live"' not in body, "nothing is running: the page does not poll"


def test_a_sites_page_is_read_only_and_cannot_delete(admin_client):
    site = active_site("readonly")
    response = admin_client.get(site_page(site))
    body = response.content.decode()
    assert response.context["title"] == "View site"
    assert 'name="_save"' not in body and "deletelink" not in body
    assert admin_client.post(site_page(site), {"name": "renamed"}).status_code == 403
    assert admin_client.get(reverse("admin:sites_site_delete", args=[site.pk])).status_code == 403
    site.refresh_from_db()
    assert site.name == "readonly"


def test_progress_reports_an_open_job_and_changes_as_its_steps_finish(admin_client):
    site = create_site("progress")
    url = reverse("admin:sites_site_progress", args=[site.pk])
    first = admin_client.get(url).json()
    assert first["open"] is True
    step = JobStep.objects.create(job_id=site.current_job_id, attempt=1, name="database")
    second = admin_client.get(url).json()
    step.finished_at, step.outcome = timezone.now(), "OK"
    step.save()
    third = admin_client.get(url).json()
    assert len({first["fingerprint"], second["fingerprint"], third["fingerprint"]}) == 3
    finish(site)
    assert admin_client.get(url).json()["open"] is False
    assert 'id="wpfleet-live"' not in admin_client.get(site_page(site)).content.decode()


def test_progress_of_a_deleted_site_is_404_so_its_page_moves_to_the_list(admin_client):
    site = active_site("gone")
    url = reverse("admin:sites_site_progress", args=[site.pk])
    site.delete()
    assert admin_client.get(url).status_code == 404


def test_progress_needs_a_staff_login(client):
    site = create_site("private")
    response = client.get(reverse("admin:sites_site_progress", args=[site.pk]))
    assert response.status_code == 302 and "/login/" in response.url


# --- actions ----------------------------------------------------------------------------------


def act(client, action: str, sites: list[Site], **extra):
    data = {"action": action, "_selected_action": [site.pk for site in sites], "index": 0, **extra}
    return client.post(SITES, data, follow=True)


def test_the_stock_delete_action_is_gone(admin_client):
    choices = [value for value, _ in admin_client.get(SITES).context["action_form"].fields["action"].choices]
    assert "delete_selected" not in choices
    assert {"retry_failed_jobs", "deprovision_sites", "cleanup_zombies"} <= set(choices)


def test_retry_action_queues_a_fresh_job_for_failed_sites_and_reports_the_skipped(admin_client):
    failed = zombie("failed")
    old_job = failed.last_job_id
    busy = create_site("busy")
    done = active_site("done")
    response = act(admin_client, "retry_failed_jobs", [failed, busy, done])
    assert messages_of(response) == ["1 site queued for retry; 2 skipped: job in progress (busy); no failed job (done)"]
    failed.refresh_from_db()
    assert failed.current_job_id not in (None, old_job)
    assert failed.current_job.type == Site.JobType.PROVISION and failed.current_job.status == Job.Status.PENDING
    assert busy.jobs.count() == 1 and done.jobs.count() == 1
    assert LogEntry.objects.filter(object_id=str(failed.pk)).count() == 1


def test_delete_action_asks_for_confirmation_before_anything_happens(admin_client):
    site = active_site("careful")
    busy = create_site("working")
    response = act(admin_client, "deprovision_sites", [site, busy])
    assert response.templates[0].name == "wpfleet/confirm_action.html"
    body = response.content.decode()
    assert "Are you sure you want to delete 1 site?" in body
    assert "skipped: job in progress" in body
    assert not Job.objects.filter(type=Site.JobType.DEPROVISION).exists()


def test_confirmed_delete_action_queues_deprovisioning_and_reports_counts(admin_client):
    first, second = active_site("first"), active_site("second")
    busy = create_site("busy")
    response = act(admin_client, "deprovision_sites", [first, second, busy], post="yes")
    assert messages_of(response) == ["2 sites queued for deletion; 1 skipped: job in progress (busy)"]
    for site in (first, second):
        site.refresh_from_db()
        assert site.status == Site.Status.DEPROVISIONING
        assert site.current_job.type == Site.JobType.DEPROVISION
    busy.refresh_from_db()
    assert busy.status == Site.Status.PROVISIONING and busy.current_job.type == Site.JobType.PROVISION


def test_delete_from_a_sites_page_returns_to_that_page(admin_client):
    site = active_site("fromhere")
    back = site_page(site)
    response = admin_client.post(
        SITES, {"action": "deprovision_sites", "_selected_action": [site.pk], "post": "yes", "_next": back}
    )
    assert response.status_code == 302 and response.url == back
    assert 'id="wpfleet-live"' in admin_client.get(back).content.decode()


def test_an_operator_without_the_delete_permission_cannot_deprovision(client):
    user = get_user_model().objects.create_user("viewer", password="x-" + "p" * 12, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_site", "change_site"]))
    client.force_login(user)
    site = active_site("protected")
    choices = [value for value, _ in client.get(SITES).context["action_form"].fields["action"].choices]
    assert "deprovision_sites" not in choices and "cleanup_zombies" not in choices
    act(client, "deprovision_sites", [site], post="yes")
    assert not Job.objects.filter(type=Site.JobType.DEPROVISION).exists()


def test_cleanup_action_removes_zombies_with_the_cleanup_code_and_skips_the_others(admin_client, monkeypatch):
    removed = []

    class Provisioner:
        def __init__(self, site, db_password, infra=None, **kwargs):
            self.site = site

        def deprovision(self):
            removed.append(self.site)

    monkeypatch.setattr("sites.ops.cleanup.Provisioner", Provisioner)
    monkeypatch.setattr("sites.ops.cleanup.Infra", lambda: None)
    dead = zombie("dead")
    also_dead = deprovision_zombie("alsodead")
    fine = active_site("fine")
    response = act(admin_client, "cleanup_zombies", [dead, also_dead, fine], post="yes")
    assert messages_of(response) == ["2 zombie sites cleaned up; 1 skipped: not a zombie (fine)"]
    assert sorted(removed) == ["alsodead", "dead"]
    assert list(Site.objects.values_list("name", flat=True)) == ["fine"]


def test_cleanup_action_reports_what_it_could_not_remove(admin_client):
    dead = zombie("stuck")
    response = act(admin_client, "cleanup_zombies", [dead], post="yes")
    [message] = messages_of(response)
    assert message.startswith("0 zombie sites cleaned up; 1 failed: stuck: ")
    assert Site.objects.filter(name="stuck").exists(), "a site whose leftovers remain keeps its record"


# --- jobs -----------------------------------------------------------------------------------


def test_jobs_cannot_be_added_edited_or_deleted_from_the_admin(admin_client):
    job = create_site("record").current_job
    assert admin_client.get(reverse("admin:jobs_job_add")).status_code == 403
    assert admin_client.get(reverse("admin:jobs_job_delete", args=[job.pk])).status_code == 403
    assert admin_client.post(job_page(job), {"status": "DONE"}).status_code == 403
    choices = [value for value, _ in admin_client.get(JOBS).context["action_form"].fields["action"].choices]
    assert choices[1:] == ["retry_jobs"]


def test_the_jobs_list_shows_site_status_attempts_duration_and_a_truncated_error(admin_client):
    fail_for_good(create_site("listed"), "step route failed: " + "x" * 300)
    body = admin_client.get(JOBS + "?status__exact=FAILED&type__exact=PROVISION").content.decode()
    assert "listed" in body and "3/3" in body and "5.0 s" in body
    assert "step route failed: xxx" in body and "x" * 100 + "…" not in body and "…" in body


def test_a_jobs_page_shows_the_traceback_to_superusers_only(admin_client, client):
    job = fail_for_good(create_site("trace"))
    JobStep.objects.create(job=job, attempt=1, name="php", outcome="FAILED", error="boom", finished_at=timezone.now())
    as_superuser = admin_client.get(job_page(job)).content.decode()
    assert "Traceback: boom" in as_superuser and "step php failed: boom" in as_superuser
    assert "Attempt 1 of 3" in as_superuser

    operator = get_user_model().objects.create_user("operator2", password="x-" + "p" * 12, is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["view_job", "view_site"]))
    client.force_login(operator)
    as_operator = client.get(job_page(job)).content.decode()
    assert "step php failed: boom" in as_operator
    assert "Traceback: boom" not in as_operator


def test_a_running_jobs_page_polls_for_progress(admin_client):
    job = create_site("running").current_job
    body = admin_client.get(job_page(job)).content.decode()
    assert reverse("admin:jobs_job_progress", args=[job.pk]) in body
    assert admin_client.get(reverse("admin:jobs_job_progress", args=[job.pk])).json()["open"] is True


def test_job_retry_action_retries_only_the_latest_final_failure_of_an_existing_site(admin_client):
    site = zombie("again")
    latest = site.last_job
    running = create_site("running").current_job
    orphan = fail_for_good(create_site("orphan"))
    Site.objects.filter(name="orphan").delete()
    response = admin_client.post(
        JOBS,
        {"action": "retry_jobs", "_selected_action": [latest.pk, running.pk, orphan.pk], "index": 0},
        follow=True,
    )
    assert messages_of(response) == [
        f"1 job queued for retry; 2 skipped: not failed for good (#{running.pk} running); site deleted (#{orphan.pk} orphan)"
    ]
    site.refresh_from_db()
    assert site.current_job_id not in (None, latest.pk)


# --- secrets --------------------------------------------------------------------------------


def test_the_database_password_appears_on_no_admin_page(admin_client, django_capture_on_commit_callbacks):
    admin_client.post(ADD_SITE, {"name": "secret", "_save": "Save"})
    site = Site.objects.get(name="secret")
    job = fail_for_good(site)
    password = site.db_password
    assert len(password) >= 24
    pages = [
        SITES,
        SITES + "?zombie=yes",
        ADD_SITE,
        site_page(site),
        reverse("admin:sites_site_history", args=[site.pk]),
        reverse("admin:sites_site_progress", args=[site.pk]),
        JOBS,
        job_page(job),
        reverse("admin:jobs_job_history", args=[job.pk]),
        reverse("admin:jobs_job_progress", args=[job.pk]),
        reverse("admin:index"),
    ]
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert password not in response.content.decode(), url
    for action in ("deprovision_sites", "cleanup_zombies"):
        assert password not in act(admin_client, action, [site]).content.decode()
    act(admin_client, "retry_failed_jobs", [site])
    for entry in LogEntry.objects.all():
        assert password not in entry.object_repr + entry.change_message
    assert LogEntry.objects.filter(object_id=str(site.pk)).count() == 2, "the addition and the retry"


# --- the link to the live site ------------------------------------------------------------


def test_the_domain_link_is_the_sites_https_url(admin_client):
    site = active_site("linked")
    for url in (SITES, site_page(site)):
        assert f'href="https://{site.domain}/"' in admin_client.get(url).content.decode(), url


def test_a_caddy_url_that_is_not_https_stops_the_panel_at_start():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "hosting.settings", "WPFLEET_CADDY_URL": "http://127.0.0.1:443"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WPFLEET_CADDY_URL='http://127.0.0.1:443' is not a https URL with a host" in result.stderr


# --- inside WordPress: one-click login and a new admin password ---------------------------------


def test_an_active_sites_page_offers_the_wordpress_login_and_a_new_password_to_operators_only(admin_client, client):
    site = active_site("wpbuttons")
    body = admin_client.get(site_page(site)).content.decode()
    assert "Log in to WordPress" in body and "Set a new admin password" in body
    assert reverse("admin:sites_site_wordpress_login", args=[site.pk]) in body

    viewer = get_user_model().objects.create_user("onlylooks", password=None, is_staff=True)
    viewer.groups.add(shipped_group("Site viewers"))
    client.force_login(viewer)
    body = client.get(site_page(site)).content.decode()
    assert "Log in to WordPress" not in body and "Set a new admin password" not in body
    for name in ("admin:sites_site_wordpress_login", "admin:sites_site_admin_password"):
        assert client.post(reverse(name, args=[site.pk])).status_code == 403, name


def test_a_site_being_built_offers_no_wordpress_login_and_a_post_says_why(admin_client):
    site = create_site("wpbusy")
    assert "Log in to WordPress" not in admin_client.get(site_page(site)).content.decode()
    response = admin_client.post(reverse("admin:sites_site_wordpress_login", args=[site.pk]), follow=True)
    assert "site wpbusy is provisioning: only an active site has a WordPress to log in to" in messages_of(response)
    assert not LogEntry.objects.filter(change_message__contains="WordPress").exists()


def test_the_wordpress_login_refuses_a_get(admin_client):
    site = active_site("wpget")
    # A link followed, prefetched or pasted must not log anyone into WordPress.
    assert admin_client.get(reverse("admin:sites_site_wordpress_login", args=[site.pk])).status_code == 403
    assert admin_client.get(reverse("admin:sites_site_admin_password", args=[site.pk])).status_code == 403


# --- domains ---------------------------------------------------------------------------------


def test_a_sites_page_lists_its_domains_and_adds_one_through_the_services(admin_client):
    site = active_site("withdomains")
    body = admin_client.get(site_page(site)).content.decode()
    assert "withdomains.wpfleet.test" in body and "Add a domain" in body
    add = reverse("admin:sites_site_domains", args=[site.pk, "add"])
    response = admin_client.post(add, {"domain": "Shop.Example.com"}, follow=True)
    assert "Adding shop.example.com: job #" in " ".join(messages_of(response))
    assert list(site.domains.values_list("name", "state")) == [("shop.example.com", "ADDING")]
    assert Site.objects.get(pk=site.pk).current_job.type == "DOMAINS"


def test_a_bad_domain_in_the_admin_shows_the_apis_message_and_writes_nothing(admin_client, api):
    site = active_site("baddomain")
    api_message = api.post(f"/api/sites/{site.name}/domains", {"domain": "10.0.0.1"}, format="json").json()["detail"]
    response = admin_client.post(
        reverse("admin:sites_site_domains", args=[site.pk, "add"]), {"domain": "10.0.0.1"}, follow=True
    )
    assert api_message.endswith(messages_of(response)[0])
    assert not site.domains.exists() and Site.objects.get(pk=site.pk).current_job_id is None


def test_a_viewer_sees_the_domains_without_the_actions(client):
    site = active_site("viewdomains")
    viewer = get_user_model().objects.create_user("domainviewer", password=None, is_staff=True)
    viewer.groups.add(shipped_group("Site viewers"))
    client.force_login(viewer)
    body = client.get(site_page(site)).content.decode()
    assert "viewdomains.wpfleet.test" in body and "Add a domain" not in body
    assert (
        client.post(reverse("admin:sites_site_domains", args=[site.pk, "add"]), {"domain": "a.example.com"}).status_code
        == 403
    )
