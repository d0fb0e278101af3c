"""Backups on a site's page in the operators' console: list, back up, restore, clone.

Without the lab: backups are catalogue rows made here (DONE, as a finished
backup job leaves them), and the actions only open jobs, as the API's do
(the queue is the ORM broker's table). The repository setting is only read
for being set.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job
from sites.models import Backup, Site
from sites.models.validation import taken_message, validate_site_name
from sites.services import create_site
from tests.conftest import user_in_group

pytestmark = pytest.mark.django_db

BACKUPS = reverse("admin:sites_backup_changelist")


@pytest.fixture(autouse=True)
def lab_is_down(monkeypatch, settings):
    """Nothing answers (the site's page probes its resources): no Docker engine, no MariaDB."""
    nowhere = "unix:///nonexistent/wpfleet-admin-test.sock"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    settings.WPFLEET_DOCKER_HOST = nowhere
    settings.WPFLEET_DB_ADMIN = {**settings.WPFLEET_DB_ADMIN, "host": "127.0.0.1", "port": 1, "connect_timeout": 1}


@pytest.fixture(autouse=True)
def repository(settings):
    """A configured repository: the services check only that the setting is not empty."""
    settings.WPFLEET_BACKUP_REPOSITORY = "/tmp/x"


def site_page(site: Site) -> str:
    return reverse("admin:sites_site_change", args=[site.pk])


def back_up_url(site: Site) -> str:
    return reverse("admin:sites_site_back_up", args=[site.pk])


def restore_url(site: Site, key: str) -> str:
    return reverse("admin:sites_site_restore", args=[site.pk, key])


def clone_url(site: Site, key: str) -> str:
    return reverse("admin:sites_site_clone", args=[site.pk, key])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def active_site(name: str) -> Site:
    """A site whose provisioning finished: live, and no job holds it."""
    site = create_site(name)
    Job.objects.filter(pk=site.current_job_id).update(status=Job.Status.DONE, attempts=1, finished_at=timezone.now())
    Site.objects.filter(pk=site.pk).update(current_job=None, status=Site.Status.ACTIVE)
    site.refresh_from_db()
    return site


def backup_of(
    site: Site,
    *,
    hours_ago: int = 1,
    kind: str = Backup.Kind.MANUAL,
    status: str = Backup.Status.DONE,
    size: int = 1_572_864,
    added: int = 2048,
) -> Backup:
    """A catalogue row as a backup job leaves it."""
    taken = timezone.now() - dt.timedelta(hours=hours_ago)
    return Backup.objects.create(
        site=site,
        site_name=site.name,
        kind=kind,
        status=status,
        size_bytes=size,
        added_bytes=added,
        title=f"{site.name} as it was",
        admin_user="keeper",
        created_at=taken,
        finished_at=taken + dt.timedelta(minutes=2),
    )


def jobs_of(site: Site, job_type: str) -> list[Job]:
    return list(Job.objects.filter(subject_id=site.pk, subject_name=site.name, type=job_type))


def logged(site: Site) -> list[str]:
    return [entry.get_change_message() for entry in LogEntry.objects.filter(object_id=str(site.pk)).order_by("id")]


def viewer_client(client: Client) -> Client:
    client.force_login(user_in_group("backupviewer", "Site viewers"))
    return client


# --- the list on the site's page ----------------------------------------------------------------


def test_a_sites_page_lists_its_good_backups_newest_first_with_readable_sizes(admin_client):
    site, other = active_site("bkplist"), active_site("bkpother")
    older = backup_of(site, hours_ago=30, kind=Backup.Kind.SCHEDULED, size=5 * 1024**3, added=300 * 1024**2)
    newer = backup_of(site, hours_ago=2)
    failed = backup_of(site, hours_ago=1, status=Backup.Status.FAILED)
    running = backup_of(site, hours_ago=0, status=Backup.Status.RUNNING)
    elsewhere = backup_of(other)

    body = admin_client.get(site_page(site)).content.decode()

    assert "<h2>Backups</h2>" in body
    assert body.index(newer.key) < body.index(older.key), "newest first"
    for hidden in (failed, running, elsewhere):
        assert hidden.key not in body
    assert f"{newer.created_at:%Y-%m-%d %H:%M:%S} UTC" in body
    assert "Scheduled" in body and "Manual" in body
    assert "1.5\xa0MB" in body and "2.0\xa0KB" in body and "5.0\xa0GB" in body and "300.0\xa0MB" in body
    assert "Back up now" in body and back_up_url(site) in body
    assert restore_url(site, newer.key) in body and clone_url(site, older.key) in body


def test_a_site_without_backups_says_so(admin_client):
    body = admin_client.get(site_page(active_site("bkpnone"))).content.decode()
    assert "No backups yet." in body and "Back up now" in body


def test_a_site_a_job_holds_offers_only_the_clone_and_says_why(admin_client):
    site = create_site("bkpbusy")  # provisioning: its job holds it
    backup = backup_of(site)
    body = admin_client.get(site_page(site)).content.decode()
    assert "Back up now" not in body and restore_url(site, backup.key) not in body
    assert clone_url(site, backup.key) in body
    assert "it can be backed up or restored once it is active and idle" in body


def test_without_a_repository_the_page_says_so_and_offers_no_action(admin_client, settings):
    settings.WPFLEET_BACKUP_REPOSITORY = ""
    site = active_site("bkpnorepo")
    backup = backup_of(site)
    body = admin_client.get(site_page(site)).content.decode()
    assert backup.key in body, "the catalogue is still shown"
    assert "No backup repository is configured on this panel" in body
    assert "Back up now" not in body and "Restore…" not in body and "Clone to…" not in body


# --- back up now ------------------------------------------------------------------------------


def test_back_up_now_opens_a_manual_backup_job_and_says_so(admin_client):
    site = active_site("bkpnow")
    response = admin_client.post(back_up_url(site), follow=True)
    [job] = jobs_of(site, Site.JobType.BACKUP)
    assert response.redirect_chain[-1][0] == site_page(site)
    assert messages_of(response) == [f"Backup started (job #{job.pk})."]
    assert job.params == {"kind": Backup.Kind.MANUAL} and Site.objects.get(pk=site.pk).current_job_id == job.pk
    assert logged(site)[-1] == f"Backup started (job #{job.pk})."


def test_back_up_now_refuses_a_get(admin_client):
    site = active_site("bkpget")
    assert admin_client.get(back_up_url(site)).status_code == 403
    assert not jobs_of(site, Site.JobType.BACKUP)


def test_every_action_needs_the_csrf_token(admin_user):
    site = active_site("bkpcsrf")
    backup = backup_of(site)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    for url, data in (
        (back_up_url(site), {}),
        (restore_url(site, backup.key), {}),
        (clone_url(site, backup.key), {"name": "bkpcsrfcopy"}),
    ):
        assert client.post(url, data).status_code == 403, url
    assert Job.objects.count() == 1 and Site.objects.count() == 1, "only the site's own provisioning"


# --- restore --------------------------------------------------------------------------------


def test_restore_says_what_will_happen_before_it_opens_a_restore_job(admin_client):
    site = active_site("bkprestore")
    backup = backup_of(site, hours_ago=26)
    taken = f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC"

    page = admin_client.get(restore_url(site, backup.key))
    body = page.content.decode()
    assert page.status_code == 200 and backup.key in body and taken in body
    assert "as it is now first" in body and "replaces the site's current content" in body
    assert 'method="post"' in body and "csrfmiddlewaretoken" in body
    assert not jobs_of(site, Site.JobType.RESTORE) and Site.objects.get(pk=site.pk).current_job_id is None

    response = admin_client.post(restore_url(site, backup.key), follow=True)
    [job] = jobs_of(site, Site.JobType.RESTORE)
    assert job.params == {"backup": backup.key}
    assert response.redirect_chain[-1][0] == site_page(site)
    assert messages_of(response) == [
        f"Restore of the backup of {taken} started (job #{job.pk}): the site as it is now is backed up first."
    ]
    assert logged(site)[-1] == f"Restore of backup {backup.key} of {taken} started (job #{job.pk})."


@pytest.mark.parametrize("whose", ["another site's", "a failed", "an unknown"])
def test_a_backup_that_is_not_one_of_the_sites_good_ones_is_neither_restored_nor_cloned(admin_client, whose):
    site, other = active_site("bkpmine"), active_site("bkptheirs")
    key = {
        "another site's": lambda: backup_of(other).key,
        "a failed": lambda: backup_of(site, status=Backup.Status.FAILED).key,
        "an unknown": lambda: "0123456789abcdef",
    }[whose]()
    sites, jobs, entries = Site.objects.count(), Job.objects.count(), LogEntry.objects.count()
    for response in (
        admin_client.get(restore_url(site, key), follow=True),
        admin_client.post(restore_url(site, key), follow=True),
        admin_client.get(clone_url(site, key), follow=True),
        admin_client.post(clone_url(site, key), {"name": "bkpstolen"}, follow=True),
    ):
        assert response.redirect_chain[-1][0] == site_page(site)
        assert messages_of(response) == [f"site bkpmine has no backup {key}"]
    assert (Site.objects.count(), Job.objects.count(), LogEntry.objects.count()) == (sites, jobs, entries)


# --- clone -----------------------------------------------------------------------------------


def test_clone_asks_for_the_new_name_then_builds_the_site_from_the_backup(admin_client):
    site = active_site("bkpsource")
    backup = backup_of(site, hours_ago=5)
    taken = f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC"

    page = admin_client.get(clone_url(site, backup.key))
    assert page.status_code == 200 and backup.key in page.content.decode()
    assert "New site" in page.content.decode() and Site.objects.count() == 1

    response = admin_client.post(clone_url(site, backup.key), {"name": "bkpcopy"}, follow=True)
    clone = Site.objects.get(name="bkpcopy")
    [job] = jobs_of(clone, Site.JobType.PROVISION)
    assert job.params == {"backup": backup.key} and clone.current_job_id == job.pk
    assert clone.title == backup.title and clone.admin_user == "keeper"
    assert response.redirect_chain[-1][0] == site_page(clone)
    assert messages_of(response) == [
        f"The site “bkpcopy” is being built from the backup of bkpsource of {taken} (job #{job.pk}); "
        "this page shows its job’s progress."
    ]
    [added] = LogEntry.objects.filter(object_id=str(clone.pk))
    assert added.action_flag == ADDITION
    assert added.get_change_message() == f"Cloned from backup {backup.key} of bkpsource ({taken}, job #{job.pk})."
    source_entry = LogEntry.objects.filter(object_id=str(site.pk)).latest("id")
    assert source_entry.action_flag == CHANGE and "cloned into the new site bkpcopy" in source_entry.change_message
    assert Site.objects.get(pk=site.pk).current_job_id is None, "the source is not touched"


def _invalid_name_message(name: str) -> str:
    with pytest.raises(ValidationError) as refused:
        validate_site_name(name)
    return refused.value.messages[0]


@pytest.mark.parametrize("name", ["bkptaken", "Not A Name", "", "admin"])
def test_a_taken_or_invalid_clone_name_is_shown_on_the_form_and_nothing_is_created(admin_client, name):
    site = active_site("bkpform")
    backup = backup_of(site)
    active_site("bkptaken")
    expected = taken_message(name) if name == "bkptaken" else _invalid_name_message(name)
    sites, jobs, entries = Site.objects.count(), Job.objects.count(), LogEntry.objects.count()

    response = admin_client.post(clone_url(site, backup.key), {"name": name})

    assert response.status_code == 200
    assert response.context["form"].errors == {"name": [expected]}
    assert (Site.objects.count(), Job.objects.count(), LogEntry.objects.count()) == (sites, jobs, entries)


# --- the services' refusals -------------------------------------------------------------------


def test_a_busy_site_is_neither_backed_up_nor_restored_and_the_page_says_why(admin_client):
    site = active_site("bkpheld")
    backup = backup_of(site)
    holder = site.open_job(Site.JobType.DOMAINS)
    for url in (back_up_url(site), restore_url(site, backup.key)):
        response = admin_client.post(url, follow=True)
        assert response.redirect_chain[-1][0] == site_page(site)
        assert messages_of(response) == ["site bkpheld already has a job in progress (or is being repaired)"]
    assert list(Job.objects.filter(subject_id=site.pk).exclude(type=Site.JobType.PROVISION)) == [holder]
    assert Site.objects.get(pk=site.pk).current_job_id == holder.pk and not logged(site)


def test_a_site_that_is_not_active_is_neither_backed_up_nor_restored(admin_client):
    site = create_site("bkpbuilding")
    backup = backup_of(site)
    Site.objects.filter(pk=site.pk).update(current_job=None)  # still PROVISIONING, but no job holds it
    response = admin_client.post(back_up_url(site), follow=True)
    assert messages_of(response) == ["site bkpbuilding is provisioning: only an active site is backed up"]
    response = admin_client.post(restore_url(site, backup.key), follow=True)
    assert messages_of(response) == ["site bkpbuilding is provisioning: only an active site is restored"]
    assert Job.objects.count() == 1 and not logged(site)


def test_without_a_repository_every_action_says_so_and_changes_nothing(admin_client, settings):
    settings.WPFLEET_BACKUP_REPOSITORY = ""
    site = active_site("bkpoff")
    backup = backup_of(site)
    sites, jobs = Site.objects.count(), Job.objects.count()
    for url, data in (
        (back_up_url(site), {}),
        (restore_url(site, backup.key), {}),
        (clone_url(site, backup.key), {"name": "bkpoffcopy"}),
    ):
        response = admin_client.post(url, data, follow=True)
        assert response.redirect_chain[-1][0] == site_page(site), url
        assert messages_of(response) == ["backups are not configured on this panel (WPFLEET_BACKUP_REPOSITORY)"]
    assert (Site.objects.count(), Job.objects.count()) == (sites, jobs) and not logged(site)


# --- who may ---------------------------------------------------------------------------------


def test_a_viewer_sees_the_backups_without_the_actions_and_is_refused_each(client):
    site = active_site("bkpview")
    backup = backup_of(site)
    viewer = viewer_client(client)
    body = viewer.get(site_page(site)).content.decode()
    assert "<h2>Backups</h2>" in body and backup.key in body
    assert "Back up now" not in body and "Restore…" not in body and "Clone to…" not in body

    sites, jobs = Site.objects.count(), Job.objects.count()
    assert viewer.post(back_up_url(site)).status_code == 403
    for url in (restore_url(site, backup.key), clone_url(site, backup.key)):
        assert viewer.get(url).status_code == 403, url
        assert viewer.post(url, {"name": "bkpviewcopy"}).status_code == 403, url
    assert (Site.objects.count(), Job.objects.count()) == (sites, jobs) and not logged(site)


def test_restoring_is_changing_the_site_and_cloning_is_adding_one(client):
    """The API's rule set: a user who may change sites but not add them restores and cannot clone."""
    site = active_site("bkprules")
    backup = backup_of(site)
    user = get_user_model().objects.create_user("changesonly", password=None, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="sites", codename__in=["view_site", "change_site"])
    )
    client.force_login(user)
    body = client.get(site_page(site)).content.decode()
    assert "Back up now" in body and restore_url(site, backup.key) in body and "Clone to…" not in body
    assert client.get(clone_url(site, backup.key)).status_code == 403
    assert client.post(clone_url(site, backup.key), {"name": "bkprulescopy"}).status_code == 403
    assert not Site.objects.filter(name="bkprulescopy").exists()
    assert client.post(restore_url(site, backup.key)).status_code == 302
    assert len(jobs_of(site, Site.JobType.RESTORE)) == 1


# --- the read-only list of every backup -----------------------------------------------------------


def test_the_backups_list_shows_every_row_and_cannot_change_any(admin_client):
    site = active_site("bkpall")
    good = backup_of(site, size=3 * 1024**2)
    failed = backup_of(site, status=Backup.Status.FAILED)
    Backup.objects.filter(pk=failed.pk).update(error="restic: repository is locked")
    gone = Backup.objects.create(site=None, site_name="bkpgone", kind=Backup.Kind.BEFORE_DELETE, status="DONE")

    body = admin_client.get(BACKUPS).content.decode()
    for backup in (good, failed, gone):
        assert backup.key in body
    assert "restic: repository is locked" in body and "3.0\xa0MB" in body and "(deleted)" in body
    assert site_page(site) in body

    filtered = admin_client.get(BACKUPS, {"status__exact": "FAILED"}).content.decode()
    assert failed.key in filtered and good.key not in filtered
    searched = admin_client.get(BACKUPS, {"q": "bkpgone"}).content.decode()
    assert gone.key in searched and good.key not in searched

    assert admin_client.get(reverse("admin:sites_backup_add")).status_code == 403
    detail = admin_client.get(reverse("admin:sites_backup_change", args=[good.pk])).content.decode()
    assert good.key in detail and 'name="_save"' not in detail
    assert admin_client.post(reverse("admin:sites_backup_delete", args=[good.pk])).status_code == 403
    assert Backup.objects.count() == 3


def test_a_viewer_may_read_the_backups_list(client):
    backup = backup_of(active_site("bkplistview"))
    assert backup.key in viewer_client(client).get(BACKUPS).content.decode()


# --- a deleted site's backup: the way back from a delete, from the Backups list ----------------


def deleted_site_backup(name: str = "gone") -> Backup:
    site = active_site(name)
    backup = backup_of(site, kind=Backup.Kind.BEFORE_DELETE)
    site.delete()
    backup.refresh_from_db()
    return backup


def test_a_deleted_sites_backup_is_offered_for_a_clone_in_the_backups_list(admin_client):
    backup = deleted_site_backup()
    live = backup_of(active_site("alive"))
    page = admin_client.get(BACKUPS).content.decode()
    assert reverse("admin:sites_backup_clone", args=[backup.pk]) in page
    assert reverse("admin:sites_backup_clone", args=[live.pk]) not in page  # cloned from its site's page


def test_cloning_a_deleted_sites_backup_under_its_old_name_brings_the_site_back(admin_client):
    backup = deleted_site_backup()
    url = reverse("admin:sites_backup_clone", args=[backup.pk])
    assert "Give it the name" in admin_client.get(url).content.decode()
    response = admin_client.post(url, {"name": "gone"})
    site = Site.objects.get(name="gone")
    assert response.status_code == 302 and response["Location"] == site_page(site)
    assert (site.current_job.type, site.current_job.params) == ("PROVISION", {"backup": backup.key})
    assert (site.title, site.admin_user) == ("gone as it was", "keeper")


def test_a_deleted_sites_backup_is_not_cloned_to_a_taken_name_nor_by_a_viewer(admin_client, client):
    backup = deleted_site_backup()
    active_site("taken")
    url = reverse("admin:sites_backup_clone", args=[backup.pk])
    response = admin_client.post(url, {"name": "taken"})
    assert response.status_code == 200 and "already exists" in response.content.decode()
    assert viewer_client(client).post(url, {"name": "other"}).status_code == 403
    assert not Site.objects.filter(name="other").exists()
    assert Site.objects.count() == 1
