"""On the real lab: back up, restore, clone and undo a delete, through the API, with restic.

Content is written through WordPress itself (``wp_insert_post``,
``wp_upload_bits``, ``update_option`` run in the site's PHP container) and
read back through Caddy over HTTPS, as a visitor would.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache

from hosting import env as envmod
from jobs.models import Job
from sites.models import Backup, Site
from sites.provisioning.restore import Restorer, files_path
from sites.services import suspend_site
from tests.conftest import unique_name
from tests.integration.conftest import fetch, leftovers, run_to_end

pytestmark = [pytest.mark.integration]

# Runs in the site's PHP container as www-data: WordPress loaded, then the body.
WP = r"""
function wp_mail() { return true; }
$_SERVER['HTTP_HOST'] = getenv('WPFLEET_HOST');
$_SERVER['HTTPS'] = 'on';
require '/var/www/html/wp-load.php';
$in = json_decode(getenv('WPFLEET_IN'), true);
$out = (function ($in) { %s })($in);
echo "\nWPFLEET-OUT " . json_encode($out);
"""


def wordpress(infra, site: Site, body: str, **values) -> Any:
    """Run PHP inside the site's WordPress; what it returns, decoded."""
    code, output = infra.docker.exec(
        site.names.php,
        ["php", "-r", WP % body],
        user="www-data",
        environment={"WPFLEET_HOST": site.domain, "WPFLEET_IN": json.dumps(values)},
    )
    assert code == 0 and "WPFLEET-OUT " in output, output[-2000:]
    return json.loads(output.rsplit("WPFLEET-OUT ", 1)[1])


def write_post_and_upload(infra, site: Site, data: bytes) -> tuple[int, str]:
    """A published post and an uploaded file, made by WordPress; (post id, upload URL path)."""
    # (the bytes go in as a file: an environment variable is too small for them)
    infra.docker.put_files(infra.docker.container(site.names.php), "/tmp", {"proof.jpg": (data, 0o644, 33, 33)})
    made = wordpress(
        infra,
        site,
        """
        $post = wp_insert_post(['post_title' => $in['title'], 'post_content' => 'restored?', 'post_status' => 'publish']);
        $upload = wp_upload_bits('proof.jpg', null, file_get_contents('/tmp/proof.jpg'));
        if ($upload['error']) { return ['error' => $upload['error']]; }
        return ['post' => $post, 'url' => $upload['url'], 'file' => $upload['file']];
        """,
        title="A post to keep",
    )
    assert isinstance(made, dict) and "post" in made, made
    path = "/" + made["url"].split("/", 3)[3]
    return made["post"], path


def post_title(site_name: str, post: int) -> str | None:
    answer = fetch(site_name, f"/?rest_route=/wp/v2/posts/{post}")
    return answer.json()["title"]["rendered"] if answer.status_code == 200 else None


def stored_file(infra, backup: Backup, path: str) -> bytes | None:
    """A file of the webroot (``path`` from its top) as the backup's files snapshot holds it."""
    dump = infra.repository.dump(backup.files_snapshot, files_path(backup.site_name))
    archive, _ = dump.communicate()
    assert dump.returncode == 0, f"restic dump of {backup.key}: {dump.returncode}"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = {member.name.split("/", 1)[-1]: member for member in tar.getmembers()}
        member = names.get(path.lstrip("/"))
        extracted = tar.extractfile(member) if member is not None else None
        return extracted.read() if extracted is not None else None


@pytest.fixture
def backups_api(api, make_site):
    if not settings.WPFLEET_BACKUP_REPOSITORY:
        pytest.fail("the lab configures a backup repository (WPFLEET_BACKUP_REPOSITORY): run lab/up.sh")
    return api


def run_latest_job(site_name: str) -> Job:
    job = Job.objects.filter(subject_name=site_name).order_by("-id").first()
    assert job is not None
    return run_to_end(job.pk)


def test_a_backup_restores_a_deleted_post_and_upload_byte_for_byte(backups_api, make_site, infra):
    api = backups_api
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    data = os.urandom(300_000)
    post, upload = write_post_and_upload(infra, site, data)
    assert fetch(site.name, upload).content == data

    answer = api.post(f"/api/sites/{site.name}/backups")
    assert answer.status_code == 202, answer.content
    assert run_to_end(answer.json()["id"]).status == Job.Status.DONE
    listed = api.get(f"/api/sites/{site.name}/backups").json()
    assert [entry["kind"] for entry in listed] == ["manual"]
    backup = listed[0]
    assert backup["size_bytes"] > 1_000_000 and backup["added_bytes"] > 0

    wordpress(
        infra,
        site,
        "wp_delete_post($in['post'], true); unlink($in['file']); return true;",
        post=post,
        file=f"/var/www/html{upload}",
    )
    assert post_title(site.name, post) is None
    assert fetch(site.name, upload).status_code != 200  # WordPress answers for it now (a redirect)

    answer = api.post(f"/api/sites/{site.name}/restore", {"backup": backup["id"]}, format="json")
    assert answer.status_code == 202, answer.content
    job = run_to_end(answer.json()["id"])
    assert job.status == Job.Status.DONE, job.error

    assert post_title(site.name, post) == "A post to keep"
    assert fetch(site.name, upload).content == data
    kinds = [entry["kind"] for entry in api.get(f"/api/sites/{site.name}/backups").json()]
    assert kinds == ["before-restore", "manual"]
    assert Restorer(site.name, infra.docker, infra.db, infra.repository).leftovers() == []


def test_a_clone_gets_the_post_its_own_https_url_and_serialized_options_rewritten(backups_api, make_site, infra):
    api = backups_api
    site = make_site()
    post, _ = write_post_and_upload(infra, site, b"clone me")
    old = f"https://{site.domain}"
    wordpress(
        infra,
        site,
        "update_option('wpfleet_links', $in['links']); return true;",
        links={"home": f"{old}/", "nested": {"logo": f"{old}/logo.png", "count": 3}, "label": "unrelated"},
    )
    answer = api.post(f"/api/sites/{site.name}/backups")
    assert run_to_end(answer.json()["id"]).status == Job.Status.DONE

    clone = unique_name("c")
    answer = api.post(f"/api/sites/{site.name}/clone", {"site": clone}, format="json")
    assert answer.status_code == 202, answer.content
    make_site.created.append(clone)
    job = run_latest_job(clone)
    assert job.status == Job.Status.DONE, job.error
    cloned = Site.objects.get(name=clone)
    assert cloned.status == Site.Status.ACTIVE

    assert post_title(clone, post) == "A post to keep"
    found = wordpress(
        infra,
        cloned,
        """
        global $wpdb;
        $raw = $wpdb->get_var("SELECT option_value FROM $wpdb->options WHERE option_name = 'wpfleet_links'");
        return ['home' => get_option('home'), 'links' => unserialize($raw), 'raw_ok' => unserialize($raw) !== false];
        """,
    )
    new = f"https://{cloned.domain}"
    assert found["home"] == new
    assert found["raw_ok"] is True
    assert found["links"] == {
        "home": f"{new}/",
        "nested": {"logo": f"{new}/logo.png", "count": 3},
        "label": "unrelated",
    }
    # The source is untouched.
    assert post_title(site.name, post) == "A post to keep"
    assert wordpress(infra, site, "return get_option('home');") == old


def test_a_deleted_site_comes_back_from_its_final_backup(backups_api, make_site, infra):
    api = backups_api
    site = make_site()
    post, _ = write_post_and_upload(infra, site, b"do not lose me")
    answer = api.delete(f"/api/sites/{site.name}")
    assert answer.status_code == 202
    job = run_latest_job(site.name)
    assert job.status == Job.Status.DONE, job.error
    assert not Site.objects.filter(name=site.name).exists()
    assert [step.name for step in job.steps.all()][:1] == ["final_backup"]

    listed = api.get(f"/api/sites/{site.name}/backups").json()
    assert [entry["kind"] for entry in listed] == ["before-delete"]
    final = Backup.objects.get(key=listed[0]["id"])
    assert final.keep_until is not None and (final.keep_until - final.created_at).days == 30

    answer = api.post(f"/api/sites/{site.name}/clone", {"site": site.name, "backup": final.key}, format="json")
    assert answer.status_code == 202, answer.content
    job = run_latest_job(site.name)
    assert job.status == Job.Status.DONE, job.error
    assert post_title(site.name, post) == "A post to keep"


def test_a_suspended_site_is_deleted_after_its_final_backup_with_nothing_left(backups_api, make_site, infra):
    api = backups_api
    site = make_site()
    _, upload = write_post_and_upload(infra, site, b"suspended, then deleted")
    assert run_to_end(suspend_site(site).pk).status == Job.Status.DONE
    # Both containers are stopped, and nothing starts them: the final backup
    # reads the files of the stopped PHP.
    assert {infra.docker.container(n).status for n in (site.names.php, site.names.nginx)} == {"exited"}

    assert api.delete(f"/api/sites/{site.name}").status_code == 202
    job = run_latest_job(site.name)

    assert job.status == Job.Status.DONE, job.error
    assert [step.name for step in job.steps.all()][:1] == ["final_backup"]
    assert not Site.objects.filter(name=site.name).exists()
    assert leftovers(infra, site.name) == []
    listed = api.get(f"/api/sites/{site.name}/backups").json()
    assert [entry["kind"] for entry in listed] == ["before-delete"]
    assert stored_file(infra, Backup.objects.get(key=listed[0]["id"]), upload) == b"suspended, then deleted"


def test_backups_of_one_site_are_not_reachable_through_another(backups_api, make_site):
    api = backups_api
    first, second = make_site(), make_site()
    answer = api.post(f"/api/sites/{first.name}/backups")
    assert run_to_end(answer.json()["id"]).status == Job.Status.DONE
    key = api.get(f"/api/sites/{first.name}/backups").json()[0]["id"]

    answer = api.post(f"/api/sites/{second.name}/restore", {"backup": key}, format="json")
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    answer = api.post(f"/api/sites/{second.name}/clone", {"site": unique_name("c"), "backup": key}, format="json")
    assert answer.status_code == 404
    assert Job.objects.filter(subject_name=second.name).count() == 1  # its provision only


def test_the_sftp_repository_holds_a_backup_that_restic_can_read(make_site, infra, settings):
    # The lab's SFTP host (lab/up.sh): a real remote target, reached with ssh.
    repository = envmod.load(settings.BASE_DIR).raw("WPFLEET_LAB_SFTP_REPOSITORY")
    assert repository and repository.startswith("sftp:"), "lab/up.sh sets WPFLEET_LAB_SFTP_REPOSITORY"
    settings.WPFLEET_BACKUP_REPOSITORY = repository
    from sites.ops.backups import take_backup
    from sites.provisioning.steps import Infra

    site = make_site()
    remote = Infra()
    backup = take_backup(site, Backup.Kind.MANUAL, None, remote)
    assert backup.status == Backup.Status.DONE
    listed = remote.repository.snapshots({"backup": backup.key})
    assert sorted(snapshot["paths"][0] for snapshot in listed) == [
        f"/sites/{site.name}/database.sql",
        f"/sites/{site.name}/files.tar",
    ]
    dump = remote.repository.dump(backup.database_snapshot, f"/sites/{site.name}/database.sql")
    sql, _ = dump.communicate()
    assert dump.returncode == 0 and b"-- Dump completed" in sql and b"wp_options" in sql


def test_a_restore_that_fails_after_the_switch_switches_back_and_the_site_serves_as_it_was(
    backups_api, make_site, infra, settings
):
    api = backups_api
    site = make_site()
    first, _ = write_post_and_upload(infra, site, b"v1")
    answer = api.post(f"/api/sites/{site.name}/backups")
    assert run_to_end(answer.json()["id"]).status == Job.Status.DONE
    backup = Backup.objects.get(site=site, kind="manual")
    second, _ = write_post_and_upload(infra, site, b"v2")
    # The restored WordPress will not pass the live check: its REST index
    # will not name this title. (A short timeout: the check gives up fast.)
    Backup.objects.filter(pk=backup.pk).update(title="Not what the backup holds")
    settings.WPFLEET_LIVE_TIMEOUT_SECONDS = 3

    job = run_to_end(api.post(f"/api/sites/{site.name}/restore", {"backup": backup.key}, format="json").json()["id"])
    assert job.status == Job.Status.FAILED
    assert "switch_back" in [step.name for step in job.steps.all()]
    # Both posts: the site is as it was before the restore, not as in the backup.
    assert post_title(site.name, first) == "A post to keep"
    assert post_title(site.name, second) == "A post to keep"
    assert Restorer(site.name, infra.docker, infra.db, infra.repository).leftovers() == []
    site.refresh_from_db()
    assert site.status == Site.Status.ACTIVE and site.current_job_id is None


def test_a_repository_with_the_wrong_password_fails_the_backup_naming_it_and_health_says_so(
    backups_api, make_site, settings
):
    api = backups_api
    site = make_site()
    settings.WPFLEET_BACKUP_PASSWORD = "not the password"
    job = run_to_end(api.post(f"/api/sites/{site.name}/backups").json()["id"])
    assert job.status == Job.Status.FAILED
    assert "backup repository" in job.error and "wrong password" in job.error
    assert "not the password" not in job.error + job.traceback
    assert not Backup.objects.good().filter(site=site).exists()
    cache.clear()
    health = api.get("/api/health")
    assert health.status_code == 503 and "backups" in health.json()["failing"]
    assert "wrong password" in health.json()["dependencies"]["backups"]["error"]


def test_an_unreachable_repository_fails_the_backup_naming_it(backups_api, make_site, settings):
    api = backups_api
    site = make_site()
    settings.WPFLEET_BACKUP_REPOSITORY = "sftp://backup@127.0.0.1:1//srv/nowhere"
    settings.WPFLEET_RETRY_BACKOFF_SECONDS = 0.1
    job = run_to_end(api.post(f"/api/sites/{site.name}/backups").json()["id"])
    assert job.status == Job.Status.FAILED
    assert job.error.startswith("backup repository: sftp://backup@127.0.0.1:1//srv/nowhere"), job.error
    site.refresh_from_db()
    assert site.current_job_id is None and site.status == Site.Status.ACTIVE


def test_the_panels_control_database_is_backed_up_to_the_repository(infra, transactional_db):
    from sites.ops.backups import backup_panel

    stored = backup_panel(infra)
    found = [
        s for s in infra.repository.snapshots({"panel": settings.WPFLEET_OWNER}) if s["id"].startswith(stored.snapshot)
    ]
    assert found and found[0]["paths"] == ["/panel/control.sql"]
    dump = infra.repository.dump(stored.snapshot, "/panel/control.sql")
    sql, _ = dump.communicate()
    assert dump.returncode == 0 and b"sites_site" in sql


def test_an_unchanged_sites_next_backup_reuses_its_files_snapshot_which_outlives_the_first_backup(
    backups_api, make_site, infra, settings
):
    from sites.ops.backups import maintain
    from sites.provisioning.orchestrator import no_record

    api = backups_api
    site = make_site()
    post, upload = write_post_and_upload(infra, site, b"unchanged")
    for _ in range(2):
        assert run_to_end(api.post(f"/api/sites/{site.name}/backups").json()["id"]).status == Job.Status.DONE
    second, first = Backup.objects.filter(site=site).order_by("-created_at")
    assert second.files_snapshot == first.files_snapshot and second.fingerprint == first.fingerprint
    assert second.added_bytes < 1_000_000 and second.size_bytes == first.size_bytes

    # Only the newest is kept: the first goes, but not the files it shares.
    settings.WPFLEET_BACKUP_KEEP_DAILY, settings.WPFLEET_BACKUP_KEEP_WEEKLY = 1, 0
    settings.WPFLEET_BACKUP_KEEP_MONTHLY = 0
    maintain(no_record)
    assert list(Backup.objects.filter(site=site)) == [second]
    assert infra.repository.snapshots({"backup": first.key, "site": site.name}) != []  # the shared files part
    wordpress(infra, site, "wp_delete_post($in['post'], true); return true;", post=post)
    job = run_to_end(api.post(f"/api/sites/{site.name}/restore", {"backup": second.key}, format="json").json()["id"])
    assert job.status == Job.Status.DONE, job.error
    assert post_title(site.name, post) == "A post to keep"
    assert fetch(site.name, upload).content == b"unchanged"

    # A changed file: the files are read again.
    wordpress(infra, site, "touch(ABSPATH . 'wp-content/uploads/new.txt'); return true;")
    assert run_to_end(api.post(f"/api/sites/{site.name}/backups").json()["id"]).status == Job.Status.DONE
    third = Backup.objects.filter(site=site, kind="manual").order_by("-created_at").first()
    assert third.files_snapshot != second.files_snapshot

    # Once no kept backup refers to the shared files snapshot, it goes too
    # (its tag names the first backup, long gone from the catalogue).
    maintain(no_record)
    assert list(Backup.objects.filter(site=site)) == [third]
    assert infra.repository.snapshots({"backup": first.key, "site": site.name}) == []


def test_a_site_whose_php_is_stopped_is_backed_up_whole_and_restores_from_that_backup(backups_api, make_site, infra):
    api = backups_api
    site = make_site()
    post, upload = write_post_and_upload(infra, site, b"backed up while PHP was down")
    assert run_to_end(api.post(f"/api/sites/{site.name}/backups").json()["id"]).status == Job.Status.DONE
    # What a crashed PHP, or an engine still starting its sites again, leaves:
    # the site ACTIVE, its PHP stopped, a backup due.
    infra.docker.stop(infra.docker.container(site.names.php))

    job = run_to_end(api.post(f"/api/sites/{site.name}/backups").json()["id"])

    assert job.status == Job.Status.DONE, job.error
    assert infra.docker.container(site.names.php).status == "exited"  # the backup started nothing
    newest, first = Backup.objects.filter(site=site).order_by("-created_at")
    # Without a listing (it needs a running PHP) the files are read again, not taken as unchanged.
    assert newest.fingerprint == "" and newest.files_snapshot != first.files_snapshot
    assert stored_file(infra, newest, upload) == b"backed up while PHP was down"

    infra.docker.start(infra.docker.container(site.names.php))
    wordpress(infra, site, "wp_delete_post($in['post'], true); return true;", post=post)
    job = run_to_end(api.post(f"/api/sites/{site.name}/restore", {"backup": newest.key}, format="json").json()["id"])
    assert job.status == Job.Status.DONE, job.error
    assert post_title(site.name, post) == "A post to keep"
    assert fetch(site.name, upload).content == b"backed up while PHP was down"


def test_a_switch_cut_short_before_all_live_files_were_moved_aside_is_undone_without_losing_any(make_site, infra):
    site = make_site()
    restorer = Restorer(site.name, infra.docker, infra.db, infra.repository)
    # What a worker killed in the middle of the switch's first moves leaves:
    # some live entries aside, the rest in place, no "all moved" marker.
    code, output = infra.docker.exec(
        site.names.php,
        [
            "sh",
            "-c",
            "cd /var/www/html && mkdir .wpfleet-old && mv wp-content wp-includes .wpfleet-old/"
            " && mkdir -p .wpfleet-restore/html && touch .wpfleet-restore/html/index.php",
        ],
    )
    assert code == 0, output
    restorer.switch_back()
    assert restorer.leftovers() == []
    for path in ("wp-content/themes", "wp-includes/version.php", "index.php", "wp-config.php"):
        assert infra.docker.exec(site.names.php, ["test", "-e", f"/var/www/html/{path}"])[0] == 0, path
    assert fetch(site.name, "/").status_code == 200
