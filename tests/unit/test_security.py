"""Who may do what, and where secrets cannot be reached: the review's findings, each a test.

No lab is needed: the API and the admin are driven through Django's test
clients, and the runner through a small fake provisioner.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from hosting.env import Env
from hosting.sqlite3.base import make_private
from jobs import runner
from jobs.models import Job
from sites.infra.errors import ForeignResource, InfraError
from sites.models import Site
from sites.ops import reconcile
from sites.permissions import GROUPS, can
from sites.provisioning import handlers
from sites.provisioning.orchestrator import StepFailed
from sites.services import create_site
from tests.conftest import token_client, user_in_group

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    # Throttle and login counters live in the cache table, which outlives a test's transaction.
    cache.clear()


@pytest.fixture
def viewer() -> APIClient:
    return token_client(user_in_group("viewer", "Site viewers"))


@pytest.fixture
def nobody() -> APIClient:
    """Logged in with a valid token, but in no group and with no permission."""
    return token_client(user_in_group("nobody", None))


@pytest.fixture
def a_site() -> Site:
    return create_site("victim")


# --- the groups the migrations ship ---------------------------------------------------------


def test_the_migrations_ship_an_operators_group_and_a_viewers_group_with_exactly_their_permissions():
    for name, expected in GROUPS.items():
        group = Group.objects.get(name=name)
        granted = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        assert granted == set(expected)
    assert set(GROUPS["Site viewers"]) == {"sites.view_site", "jobs.view_job"}


def test_an_unknown_operation_is_refused_even_to_a_superuser():
    boss = get_user_model().objects.create_superuser("boss", password=None)
    assert can(boss, "delete_site")
    assert not can(boss, "format_the_disk")


# --- the API ----------------------------------------------------------------------------------


def test_a_view_only_token_gets_403_on_post_and_delete_and_nothing_is_written(viewer, a_site):
    jobs_before = Job.objects.count()
    created = viewer.post("/api/sites", {"site": "newsite"}, format="json")
    deleted = viewer.delete(f"/api/sites/{a_site.name}")
    for response in (created, deleted):
        assert response.status_code == 403
        assert response.json()["code"] == "permission_denied"
    assert not Site.objects.filter(name="newsite").exists()
    assert Site.objects.get(pk=a_site.pk).status == Site.Status.PROVISIONING
    assert Job.objects.count() == jobs_before


def test_a_view_only_token_can_read_sites_and_jobs(viewer, a_site):
    assert viewer.get("/api/sites").status_code == 200
    assert viewer.get(f"/api/sites/{a_site.name}").json()["name"] == a_site.name
    assert viewer.get(f"/api/jobs/{a_site.current_job_id}").status_code == 200


def test_a_token_without_permissions_gets_403_on_every_read(nobody, a_site):
    for url in ("/api/sites", f"/api/sites/{a_site.name}", f"/api/jobs/{a_site.current_job_id}"):
        response = nobody.get(url)
        assert response.status_code == 403, url
        assert response.json() == {"detail": "You do not have permission to do this.", "code": "permission_denied"}


def test_no_credentials_is_401_not_403(a_site):
    response = APIClient().delete(f"/api/sites/{a_site.name}")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_the_operators_group_may_create_and_delete(api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        assert api.post("/api/sites", {"site": "opsite"}, format="json").status_code == 202
    Site.objects.filter(name="opsite").update(current_job=None, status=Site.Status.ACTIVE)
    with django_capture_on_commit_callbacks(execute=False):
        assert api.delete("/api/sites/opsite").status_code == 202


@pytest.fixture
def health_rate_of_two(settings, monkeypatch):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "health": "2/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)


@pytest.fixture
def lab_is_down(monkeypatch, settings):
    nowhere = "unix:///nonexistent/wpfleet-security-test.sock"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    settings.WPFLEET_DOCKER_HOST = nowhere
    settings.WPFLEET_DB_ADMIN = {**settings.WPFLEET_DB_ADMIN, "host": "127.0.0.1", "port": 1, "connect_timeout": 1}


def test_health_tells_anonymous_callers_only_ok_or_degraded_and_viewers_the_details(lab_is_down, viewer):
    anonymous = APIClient().get("/api/health").json()
    assert anonymous["dependencies"]["mariadb"] == "degraded"
    assert anonymous["dependencies"]["control_db"] == "ok"
    assert "127.0.0.1" not in str(anonymous) and "error" not in str(anonymous)
    detailed = viewer.get("/api/health").json()
    assert detailed["dependencies"]["mariadb"]["ok"] is False
    assert detailed["dependencies"]["mariadb"]["error"]


def test_health_is_throttled_per_address(lab_is_down, health_rate_of_two):
    client = APIClient()
    assert [client.get("/api/health").status_code for _ in range(2)] == [503, 503]
    third = client.get("/api/health")
    assert third.status_code == 429 and third.json()["code"] == "throttled"


# --- the admin --------------------------------------------------------------------------------


@pytest.fixture
def admin_viewer(client):
    client.force_login(user_in_group("adminviewer", "Site viewers"))
    return client


@pytest.mark.parametrize(
    "url, lookup",
    [
        ("admin:sites_site_changelist", "db_password__startswith=a"),
        ("admin:sites_site_changelist", "db_password__gte=a"),
        ("admin:jobs_job_changelist", "traceback__contains=x"),
        ("admin:jobs_job_changelist", "site__db_password__startswith=a"),
    ],
)
def test_a_lookup_on_a_secret_field_is_refused_in_the_admin(admin_viewer, a_site, url, lookup):
    assert admin_viewer.get(reverse(url)).status_code == 200
    response = admin_viewer.get(f"{reverse(url)}?{lookup}")
    assert response.status_code == 400


def test_a_superuser_cannot_use_a_secret_field_as_an_oracle_either(admin_client, a_site):
    response = admin_client.get(f"{reverse('admin:sites_site_changelist')}?db_password__startswith=a")
    assert response.status_code == 400


def test_the_database_password_is_encrypted_at_rest_and_cannot_be_filtered(a_site):
    with connection.cursor() as cursor:
        cursor.execute("SELECT db_password FROM sites_site WHERE id = %s", [a_site.pk])
        stored = cursor.fetchone()[0]
    assert a_site.db_password and a_site.db_password not in stored
    assert Site.objects.get(pk=a_site.pk).db_password == a_site.db_password
    with pytest.raises(FieldError, match="Unsupported lookup 'startswith' for EncryptedTextField"):
        list(Site.objects.filter(db_password__startswith=a_site.db_password[0]))


def test_rotating_the_encryption_key_keeps_every_password_readable(a_site, settings):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    old_key = settings.WPFLEET_ENCRYPTION_KEYS[0]
    settings.WPFLEET_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    call_command("rotate_encryption_key", stdout=open(os.devnull, "w"))
    settings.WPFLEET_ENCRYPTION_KEYS = settings.WPFLEET_ENCRYPTION_KEYS[:1]  # the old key dropped
    assert Site.objects.get(pk=a_site.pk).db_password == a_site.db_password


@pytest.mark.parametrize(
    "model", ["authtoken_tokenproxy", "django_q_schedule", "django_q_success", "django_q_failure", "django_q_ormq"]
)
def test_tokens_and_task_queue_admins_are_for_superusers_only(client, admin_client, model):
    from django.contrib.auth.models import Permission

    staff = user_in_group("staffer", "Site operators")
    staff.user_permissions.add(*Permission.objects.all())  # every model permission there is
    client.force_login(staff)
    url = reverse(f"admin:{model}_changelist")
    assert client.get(url).status_code == 403
    assert admin_client.get(url).status_code == 200


def test_a_viewer_sees_no_delete_retry_or_cleanup_action_and_cannot_post_one(admin_viewer, a_site):
    page = admin_viewer.get(reverse("admin:sites_site_changelist"))
    form = page.context["action_form"]  # None when the user may run no action at all
    choices = [] if form is None else [value for value, _ in form.fields["action"].choices]
    assert not {"deprovision_sites", "retry_failed_jobs", "cleanup_zombies"} & set(choices)
    Site.objects.filter(pk=a_site.pk).update(current_job=None, status=Site.Status.ACTIVE)
    admin_viewer.post(
        reverse("admin:sites_site_changelist"),
        {"action": "deprovision_sites", "_selected_action": [a_site.pk], "post": "yes"},
    )
    assert Site.objects.get(pk=a_site.pk).status == Site.Status.ACTIVE
    assert admin_viewer.get(reverse("admin:sites_site_add")).status_code == 403


def test_admin_logins_are_throttled_per_user_name_and_address(client, settings):
    settings.WPFLEET_LOGIN_FAILURES = 3
    get_user_model().objects.create_user("target", password="the-right-one-1", is_staff=True)
    url = reverse("admin:login")
    for _ in range(3):
        wrong = client.post(url, {"username": "target", "password": "guess"})
        assert wrong.status_code == 200 and "Please enter the correct username" in wrong.content.decode()
    locked = client.post(url, {"username": "target", "password": "the-right-one-1"})
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    get_user_model().objects.create_user("other", password="another-right-1", is_staff=True)
    assert client.post(url, {"username": "other", "password": "another-right-1"}).status_code == 302


# --- secrets elsewhere ------------------------------------------------------------------------


def test_drift_recorded_by_the_reconciler_is_redacted(a_site, monkeypatch):
    Site.objects.filter(pk=a_site.pk).update(current_job=None, status=Site.Status.ACTIVE)
    password = a_site.db_password

    class Caddy:
        def ensure_running(self) -> bool:
            return False

    class Infra:
        caddy = Caddy()

    def failing_repair(site, view, infra):
        raise InfraError("mariadb", f"(1045) Access denied using password {password}")

    monkeypatch.setattr(reconcile, "View", lambda infra, bulk: object())
    monkeypatch.setattr(reconcile, "reconcile_site", failing_repair)
    repaired = reconcile.reconcile_all(Infra())  # type: ignore[arg-type]  # a fake with only Caddy
    drift = Site.objects.get(pk=a_site.pk).drift
    assert "[redacted]" in drift and password not in drift
    assert password not in str(repaired)


def test_a_foreign_name_fails_the_job_for_good_without_a_retry(a_site, monkeypatch):
    class ForeignProvisioner:
        def __init__(self, *args, **kwargs):
            pass

        def provision(self):
            cause = ForeignResource("mariadb", "database user wp_victim@% exists and is not wpfleet's")
            raise StepFailed("database", cause, [])

    monkeypatch.setattr(handlers, "Provisioner", ForeignProvisioner)
    job = Job.claim(a_site.current_job_id, "w")
    assert runner.attempt(job) == "failed"
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.is_final and job.attempts == 1 < job.max_attempts
    assert "not wpfleet's" in job.error and "permanent" in job.error


def test_a_transient_failure_is_still_retried(a_site, monkeypatch):
    class DownProvisioner:
        def __init__(self, *args, **kwargs):
            pass

        def provision(self):
            raise StepFailed("database", InfraError("mariadb", "(2003) Can't connect"), [])

    monkeypatch.setattr(handlers, "Provisioner", DownProvisioner)
    job = Job.claim(a_site.current_job_id, "w")
    assert runner.attempt(job) == "retry"
    job.refresh_from_db()
    assert job.status == Job.Status.WAITING and job.next_attempt_at is not None


def test_the_control_database_file_is_created_readable_by_its_owner_only(tmp_path):
    database = tmp_path / "private" / "control.sqlite3"
    make_private(str(database))
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    database.chmod(0o644)  # a file made by an older version is tightened
    make_private(str(database))
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_an_existing_control_database_is_never_opened_to_tighten_it(tmp_path, monkeypatch):
    # Closing any descriptor of a SQLite file drops the process's locks on it,
    # those of its other connections too: that corrupts the database.
    database = tmp_path / "control.sqlite3"
    database.write_bytes(b"")
    database.chmod(0o640)
    opened: list[str] = []
    real_open = os.open

    def recording_open(path, *args):
        opened.append(str(path))
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", recording_open)
    make_private(str(database))
    assert opened == [str(database)], "only the exclusive create, which fails on an existing file"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


def test_the_database_in_use_is_mode_0600_when_it_is_sqlite():
    if connection.vendor != "sqlite":
        pytest.skip("the control database is MariaDB in this run")
    connection.ensure_connection()
    assert stat.S_IMODE(os.stat(connection.settings_dict["NAME"]).st_mode) == 0o600


def test_a_secret_can_come_from_a_file_and_not_from_both(tmp_path):
    secret = tmp_path / "db_password"
    secret.write_text("s3cret-from-a-file\n")
    assert (
        Env({"WPFLEET_DB_ADMIN_PASSWORD_FILE": str(secret)}).text("WPFLEET_DB_ADMIN_PASSWORD") == "s3cret-from-a-file"
    )
    both = Env({"WPFLEET_DB_ADMIN_PASSWORD_FILE": str(secret), "WPFLEET_DB_ADMIN_PASSWORD": "x"})
    with pytest.raises(ImproperlyConfigured, match="both set"):
        both.text("WPFLEET_DB_ADMIN_PASSWORD")
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        Env({"X_FILE": str(tmp_path / "missing")}).text("X")


# --- settings refused by name, and the production checklist ----------------------------------


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], env={**os.environ, **env}, capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("WPFLEET_DB_ADMIN_USER", "root", "WPFLEET_DB_ADMIN_USER=root"),
        ("WPFLEET_DB_USER_HOST", "%", "lets a site's account log in from anywhere"),
        ("WPFLEET_ENCRYPTION_KEYS", "not-a-key", "not a Fernet key"),
    ],
)
def test_an_unsafe_setting_stops_manage_py_naming_it(variable, value, message):
    result = manage("check", **{variable: value})
    assert result.returncode != 0 and message in result.stderr


def production_environment(tmp_path: Path) -> dict[str, str]:
    """docs/production.env.example, with its secret files written and its digests filled in."""
    from cryptography.fernet import Fernet

    values = {
        "django_secret_key": "k" * 10 + os.urandom(30).hex(),
        "database_url": f"sqlite:///{tmp_path}/control.sqlite3",
        "encryption_keys": Fernet.generate_key().decode(),
        "db_admin_password": os.urandom(12).hex(),
    }
    env = {}
    for line in (REPO / "docs" / "production.env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        if key.endswith("_FILE"):
            path = tmp_path / Path(value).name
            path.write_text(values[path.name])
            value = str(path)
        env[key] = value.replace("<digest>", "0123456789abcdef" * 4)
    return env


def check_deploy(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess:
    """`manage.py check --deploy` with the documented production environment only (no lab variables, no .env)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "WPFLEET_", "DATABASE"))}
    env = {**clean, **production_environment(tmp_path), **overrides, "WPFLEET_DOTENV": str(tmp_path / "no.env")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_check_deploy_is_clean_with_the_documented_production_environment(tmp_path):
    result = check_deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_an_unpinned_image(tmp_path):
    result = check_deploy(tmp_path, WPFLEET_PHP_IMAGE="wordpress:php8.2-fpm")
    assert result.returncode != 0 and "wpfleet.W001" in result.stderr + result.stdout
