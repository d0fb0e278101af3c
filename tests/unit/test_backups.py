"""Backups without the lab: what the API refuses, the retention policy, the schedule's spread and budget."""

from __future__ import annotations

import datetime as dt
import zlib

import pytest
from django.utils import timezone

from jobs.models import Job
from sites.models import Backup, Site
from sites.ops.backups import next_slot, retained, schedule_backups
from sites.services import delete_site
from tests.conftest import token_client, user_in_group

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def repository(settings):
    # The services only check that one is configured; nothing here runs restic.
    settings.WPFLEET_BACKUP_REPOSITORY = "/nonexistent/restic"
    settings.WPFLEET_BACKUP_PASSWORD = "unused"


def active_site(name: str) -> Site:
    return Site.objects.create(name=name, domain=f"{name}.wpfleet.test", status=Site.Status.ACTIVE)


def good_backup(site: Site, when: dt.datetime | None = None, kind: str = Backup.Kind.MANUAL) -> Backup:
    return Backup.objects.create(
        site=site,
        site_name=site.name,
        kind=kind,
        status=Backup.Status.DONE,
        created_at=when or timezone.now(),
        files_snapshot="f" * 64,
        database_snapshot="d" * 64,
        home_url=f"https://{site.domain}",
        title=site.name,
    )


# --- the API refuses, and changes nothing ---------------------------------------------


def test_the_list_shows_only_good_backups_newest_first_in_the_documented_shape(api):
    site = active_site("alpha")
    old = good_backup(site, timezone.now() - dt.timedelta(days=1))
    new = good_backup(site)
    Backup.objects.create(site=site, site_name="alpha", kind="manual", status=Backup.Status.FAILED)
    Backup.objects.create(site=site, site_name="alpha", kind="manual", status=Backup.Status.RUNNING)
    listed = api.get("/api/sites/alpha/backups").json()
    assert [entry["id"] for entry in listed] == [new.key, old.key]
    assert set(listed[0]) == {"id", "created_at", "size_bytes", "added_bytes", "kind"}


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"backup": "0123456789abcdef"}, 404, "not_found"),  # unknown
        ({}, 400, "required"),
        ({"backup": "x", "extra": 1}, 400, "unknown_field"),
    ],
)
def test_a_restore_of_no_backup_of_the_site_is_refused_and_opens_no_job(api, body, status, code):
    active_site("alpha")
    answer = api.post("/api/sites/alpha/restore", body, format="json")
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert not Job.objects.exists()


def test_a_restore_of_another_sites_backup_is_not_found(api):
    alpha, beta = active_site("alpha"), active_site("beta")
    theirs = good_backup(beta)
    answer = api.post(f"/api/sites/{alpha.name}/restore", {"backup": theirs.key}, format="json")
    assert answer.status_code == 404
    assert not Job.objects.exists()


def test_a_restore_while_another_job_holds_the_site_is_a_conflict(api):
    site = active_site("alpha")
    backup = good_backup(site)
    site.open_job(Site.JobType.DOMAINS)
    answer = api.post("/api/sites/alpha/restore", {"backup": backup.key}, format="json")
    assert (answer.status_code, answer.json()["code"]) == (409, "busy")
    assert Job.objects.count() == 1


@pytest.mark.parametrize(
    "new_name,status,code",
    [("beta", 409, "taken"), ("Not A Name", 400, "invalid"), ("www", 400, "reserved")],
)
def test_a_clone_to_a_taken_or_invalid_name_is_refused_and_creates_nothing(api, new_name, status, code, settings):
    settings.WPFLEET_RESERVED_NAMES = frozenset({"www"})
    alpha = active_site("alpha")
    active_site("beta")
    good_backup(alpha)
    answer = api.post("/api/sites/alpha/clone", {"site": new_name}, format="json")
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert Site.objects.count() == 2 and not Job.objects.exists()


def test_a_clone_opens_a_provision_job_naming_the_backup_with_the_sources_title_and_admin(api):
    alpha = active_site("alpha")
    backup = good_backup(alpha)
    Backup.objects.filter(pk=backup.pk).update(title="Alpha's blog", admin_user="wp-1234")
    answer = api.post("/api/sites/alpha/clone", {"site": "gamma"}, format="json")
    assert answer.status_code == 202
    gamma = Site.objects.get(name="gamma")
    assert (gamma.title, gamma.admin_user) == ("Alpha's blog", "wp-1234")
    assert (gamma.current_job.type, gamma.current_job.params) == ("PROVISION", {"backup": backup.key})


def test_a_deleted_sites_backups_stay_reachable_under_its_name_and_can_be_cloned(api):
    alpha = active_site("alpha")
    final = good_backup(alpha, kind=Backup.Kind.BEFORE_DELETE)
    alpha.delete()
    assert [entry["id"] for entry in api.get("/api/sites/alpha/backups").json()] == [final.key]
    answer = api.post("/api/sites/alpha/clone", {"site": "alpha", "backup": final.key}, format="json")
    assert answer.status_code == 202
    assert Site.objects.get(name="alpha").current_job.params == {"backup": final.key}
    # A name that never had a site or a backup is unknown.
    assert api.get("/api/sites/nobody/backups").status_code == 404


def test_viewers_see_backups_but_cannot_take_restore_or_clone_them(db):
    site = active_site("alpha")
    backup = good_backup(site)
    viewer = token_client(user_in_group("viewer", "Site viewers"))
    assert viewer.get("/api/sites/alpha/backups").status_code == 200
    assert viewer.post("/api/sites/alpha/backups").status_code == 403
    assert viewer.post("/api/sites/alpha/restore", {"backup": backup.key}, format="json").status_code == 403
    assert viewer.post("/api/sites/alpha/clone", {"site": "gamma"}, format="json").status_code == 403
    assert not Job.objects.exists()


def test_without_a_repository_backups_answer_503_and_a_delete_takes_no_final_backup(api, settings):
    settings.WPFLEET_BACKUP_REPOSITORY = ""
    site = active_site("alpha")
    answer = api.post("/api/sites/alpha/backups")
    assert (answer.status_code, answer.json()["code"]) == (503, "backups_disabled")
    assert delete_site(site).params == {"final_backup": False}


def test_deleting_a_live_site_asks_for_a_final_backup_first(db):
    assert delete_site(active_site("alpha")).params == {"final_backup": True}
    # A site that never went live has nothing to keep.
    building = Site.objects.create(name="beta", domain="beta.wpfleet.test")
    assert delete_site(building).params == {"final_backup": False}


# --- retention ------------------------------------------------------------------------------


def test_retention_keeps_the_newest_of_each_day_week_and_month_within_the_policy(settings):
    settings.WPFLEET_BACKUP_KEEP_DAILY, settings.WPFLEET_BACKUP_KEEP_WEEKLY = 3, 2
    settings.WPFLEET_BACKUP_KEEP_MONTHLY = 2
    site = active_site("alpha")
    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    # Two a day for 70 days.
    backups = [good_backup(site, now - dt.timedelta(hours=12 * i)) for i in range(140)]
    kept = {b.created_at for b in backups if b.pk in retained(backups, now)}
    newest_of_day = {now - dt.timedelta(days=d) for d in range(3)}  # 25, 24, 23 Nov at noon
    assert newest_of_day <= kept
    # Weekly: the newest of this ISO week (the 25th) and of the week before (Sunday the 22nd).
    assert dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC) in kept
    # Monthly: the newest of November and of October.
    assert dt.datetime(2026, 10, 31, 12, tzinfo=dt.UTC) in kept
    assert len(kept) == 5
    assert dt.datetime(2026, 11, 25, 0, tzinfo=dt.UTC) not in kept  # the same day's older one


def test_a_deleted_sites_backups_go_but_its_final_one_stays_until_its_time(db):
    site = active_site("alpha")
    now = timezone.now()
    regular = good_backup(site, now - dt.timedelta(hours=2))
    final = good_backup(site, now - dt.timedelta(hours=1), kind=Backup.Kind.BEFORE_DELETE)
    Backup.objects.filter(pk=final.pk).update(keep_until=now + dt.timedelta(days=30))
    site.delete()
    rows = list(Backup.objects.all())
    assert retained(rows, now) == {final.pk}
    assert retained(rows, now + dt.timedelta(days=31)) == set()
    assert regular.pk not in retained(rows, now)


# --- schedules -----------------------------------------------------------------------------


def test_each_site_is_backed_up_at_its_own_time_of_day_spread_over_the_day(settings):
    settings.WPFLEET_BACKUP_EVERY_HOURS = 24
    now = dt.datetime(2026, 11, 25, 0, 0, tzinfo=dt.UTC)
    slots = [next_slot(f"site{i}", now) for i in range(1000)]
    assert all(now < slot <= now + dt.timedelta(hours=24) for slot in slots)
    hours = {slot.hour for slot in slots}
    assert hours == set(range(24)), "every hour of the day has some"
    busiest = max(sum(1 for slot in slots if slot.hour == hour) for hour in range(24))
    assert busiest < 1000 / 24 * 2
    # The same site, the same time every day.
    assert next_slot("site1", now + dt.timedelta(days=1)) == slots[1] + dt.timedelta(days=1)
    assert slots[1].timestamp() % 86400 == zlib.crc32(b"site1") % 86400


def test_the_scheduler_starts_no_more_backups_than_the_backup_workers(settings):
    settings.WPFLEET_BACKUP_WORKERS = 2
    settings.WPFLEET_PANEL_BACKUP_EVERY_HOURS = 0
    sites = [active_site(f"s{i}") for i in range(5)]
    schedule_backups()  # plans each site's time
    assert all(site.backup_due_at for site in Site.objects.all())
    Site.objects.update(backup_due_at=timezone.now() - dt.timedelta(minutes=1))
    Job.objects.all().delete()
    report = schedule_backups()
    assert len(report["backups started"]) == 2
    started = Job.objects.filter(type=Site.JobType.BACKUP)
    assert started.count() == 2 and all(job.params == {"kind": "scheduled"} for job in started)
    # Those two are due again tomorrow; the others wait for a free worker.
    assert Site.objects.filter(backup_due_at__lte=timezone.now()).count() == 3
    assert schedule_backups().get("backups started") is None
    assert len(sites) == 5


@pytest.mark.parametrize(("kind", "due_again"), [("scheduled", "within the hour"), ("manual", "at its slot")])
def test_a_backup_that_fails_for_good_makes_a_scheduled_one_due_again_within_the_hour(
    settings, monkeypatch, kind, due_again
):
    from jobs import runner
    from sites.infra.errors import InfraError
    from sites.ops import backups as backup_ops

    def engine_down(*args, **kwargs):
        raise InfraError("docker", "connect: engine unreachable")

    monkeypatch.setattr(backup_ops, "take_backup", engine_down)
    settings.WPFLEET_BACKUP_RETRY_MINUTES = 60
    site = active_site("alpha")
    slot = timezone.now() + dt.timedelta(hours=23)
    Site.objects.filter(pk=site.pk).update(backup_due_at=slot)
    job = site.open_job(Site.JobType.BACKUP, params={"kind": kind})
    Job.objects.filter(pk=job.pk).update(attempts=job.max_attempts - 1)  # its last attempt

    assert runner.run_job(job.pk) == "failed"

    site.refresh_from_db()
    assert Job.objects.get(pk=job.pk).status == Job.Status.FAILED and site.current_job_id is None
    if due_again == "within the hour":
        left = site.backup_due_at - timezone.now()
        assert dt.timedelta(minutes=59) < left <= dt.timedelta(minutes=60)
    else:
        assert site.backup_due_at == slot


def test_backups_and_restores_go_to_the_backups_cluster_and_provisioning_to_the_main_one(api):
    from django_q.models import OrmQ

    site = active_site("alpha")
    backup = good_backup(site)
    assert api.post("/api/sites/alpha/backups").status_code == 202
    Site.objects.filter(pk=site.pk).update(current_job=None)
    assert api.post("/api/sites/alpha/restore", {"backup": backup.key}, format="json").status_code == 202
    assert api.post("/api/sites", {"site": "beta"}, format="json").status_code == 202
    assert sorted(OrmQ.objects.values_list("key", flat=True)) == ["wpfleet", "wpfleet-backups", "wpfleet-backups"]


def test_a_delete_can_skip_the_final_backup_and_a_bad_flag_changes_nothing(api):
    active_site("alpha")
    assert api.delete("/api/sites/alpha?final_backup=maybe").status_code == 400
    assert not Job.objects.exists()
    assert api.delete("/api/sites/alpha?final_backup=false").status_code == 202
    assert Job.objects.get().params == {"final_backup": False}


# --- the restic adapter's own logic -----------------------------------------------------------


def test_restics_errors_say_what_failed_and_whether_a_retry_can_help():
    from sites.infra.restic import _describe

    assert _describe("Fatal: wrong password or no key found\n", 1) == (
        "wrong password or no key found: check WPFLEET_BACKUP_PASSWORD",
        True,
    )
    assert _describe("Save(<data/1234>) returned error: write: no space left on device\n", 1)[1] is True
    message, permanent = _describe("Fatal: unable to open repository at sftp://h//x: EOF\n", 1)
    assert (message, permanent) == ("Fatal: unable to open repository at sftp://h//x: EOF", False)


def test_a_repository_is_named_without_a_password_its_url_may_carry():
    from sites.infra.restic import _safe_location

    assert _safe_location("rest:https://user:secret@backup.example/repo") == "rest:https://user@backup.example/repo"
    assert _safe_location("sftp://backup@127.0.0.1:2222//srv/r") == "sftp://backup@127.0.0.1:2222//srv/r"


def test_the_sftp_command_carries_the_key_the_known_hosts_and_the_port(settings, tmp_path):
    import shlex

    from sites.infra.restic import _sftp_command

    settings.WPFLEET_BACKUP_SFTP_KEY_FILE = "/keys/id"
    settings.WPFLEET_BACKUP_SFTP_KNOWN_HOSTS = "/keys/known"
    words = shlex.split(_sftp_command("sftp://backup@10.0.0.5:2222//srv/restic"))
    assert words[-3:] == ["backup@10.0.0.5", "-s", "sftp"]
    assert words[words.index("-p") + 1] == "2222" and words[words.index("-i") + 1] == "/keys/id"
    assert "StrictHostKeyChecking=yes" in words and "UserKnownHostsFile=/keys/known" in words
    assert "-p" not in shlex.split(_sftp_command("sftp:backup@10.0.0.5:/srv/restic"))
    assert _sftp_command("/var/backups/restic") is None


def test_the_panels_own_backup_and_the_maintenance_are_opened_once_per_period(settings):
    settings.WPFLEET_PANEL_BACKUP_EVERY_HOURS = 24
    settings.WPFLEET_BACKUP_MAINTENANCE_EVERY_HOURS = 24
    first = schedule_backups()
    assert {"panel backup", "repository maintenance"} <= set(first)
    assert schedule_backups() == {}  # open already: not again
    Job.objects.update(status=Job.Status.DONE)
    assert schedule_backups() == {}  # done within the period: not again
    Job.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    assert {"panel backup", "repository maintenance"} <= set(schedule_backups())
    panel = Job.objects.filter(type="PANEL_BACKUP").latest("id")
    assert panel.subject_id is None and panel.subject_name == "wpfleet panel"
