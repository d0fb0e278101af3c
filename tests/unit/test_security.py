"""Who may do what, and where secrets cannot be reached: the review's findings, each a test.

No lab is needed: the API and the admin are driven through Django's test
clients, and the runner through a small fake provisioner.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import FieldError, ImproperlyConfigured
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from hosting.env import Env
from hosting.login_throttle import ThrottledAdminAuthenticationForm
from hosting.sqlite3.base import make_private
from jobs import runner
from jobs.models import Job
from sites.infra.errors import ForeignResource, InfraError
from sites.infra.mariadb import MariaDBAdmin
from sites.models import Site
from sites.ops import reconcile
from sites.permissions import GROUPS, OPERATIONS, ApiPermission, can
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


def test_a_client_cannot_escape_the_health_throttle_by_sending_its_own_x_forwarded_for(lab_is_down, health_rate_of_two):
    client = APIClient()
    answers = [client.get("/api/health", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code for i in range(4)]
    assert answers == [503, 503, 429, 429]


PROXY = "10.0.0.2"  # the TLS proxy in front of gunicorn: every request comes from its address


@pytest.fixture
def behind_the_proxy(settings):
    """REST_FRAMEWORK as hosting.settings makes it with DJANGO_BEHIND_TLS_PROXY=1."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def forwarded(client_address: str, forged: str = "") -> dict[str, Any]:
    """What the proxy hands gunicorn: its own address, and the client's appended to whatever the client sent."""
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": f"{forged}, {client_address}" if forged else client_address}


def test_behind_the_tls_proxy_health_is_throttled_per_address_the_proxy_saw(
    lab_is_down, health_rate_of_two, behind_the_proxy
):
    client = APIClient()
    attacker = [
        client.get("/api/health", **forwarded("203.0.113.9", forged=f"198.51.100.{i}")).status_code for i in range(3)
    ]
    assert attacker == [503, 503, 429], "a forged X-Forwarded-For does not make a new client"
    assert client.get("/api/health", **forwarded("203.0.113.10")).status_code == 503, "another client has its own count"


@pytest.mark.parametrize("behind, proxies", [("1", "1"), ("0", "0")])
def test_the_api_counts_one_proxy_exactly_when_the_panel_is_behind_the_tls_proxy(behind, proxies):
    shown = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.REST_FRAMEWORK['NUM_PROXIES'])",
        DJANGO_BEHIND_TLS_PROXY=behind,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[-1] == proxies


# --- every endpoint goes through the shared rule set --------------------------------------------

# Views that answer without an operation of sites.permissions, each for a reason:
# health answers anyone (throttled), the 404 view names nothing, the schema and
# its viewer describe the API and touch no data.
WITHOUT_OPERATIONS = {"Health", "NoSuchResource", "SpectacularAPIView", "SpectacularSwaggerView"}
METHODS = ("get", "post", "put", "patch", "delete")


def api_views(patterns=None) -> list[tuple[type[APIView], dict]]:
    """(view class, as_view() arguments) of every DRF view the project's URLs route to."""
    found = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            found += api_views(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view = getattr(pattern.callback, "cls", None)
            if isinstance(view, type) and issubclass(view, APIView):
                found.append((view, getattr(pattern.callback, "initkwargs", {})))
    return found


def outside_the_rule_set(views: list[tuple[type[APIView], dict]]) -> list[str]:
    """Each method a view implements without an operation of sites.permissions.OPERATIONS, or unchecked."""
    wrong = []
    for view, initkwargs in views:
        if view.__name__ in WITHOUT_OPERATIONS:
            continue
        if ApiPermission not in initkwargs.get("permission_classes", view.permission_classes):
            wrong.append(f"{view.__name__}: its permission classes leave out ApiPermission")
        operations = getattr(view, "operations", {})
        for method in METHODS:
            if hasattr(view, method) and operations.get(method.upper()) not in OPERATIONS:
                wrong.append(f"{view.__name__}.{method}: operation {operations.get(method.upper())!r}")
    return wrong


def test_every_api_endpoint_maps_each_method_it_implements_to_an_operation_of_the_shared_rule_set():
    views = api_views()
    names = {view.__name__ for view, _ in views}
    assert {"SiteListCreate", "SiteDetail", "JobDetail"} <= names, "the walk reached the API's URLs"
    assert WITHOUT_OPERATIONS <= names, "every exception is still routed (or leave it out of the list)"
    assert outside_the_rule_set(views) == []


def test_an_endpoint_without_an_operation_for_a_method_is_caught_by_the_walk():
    class Sneaky(APIView):
        operations = {"GET": "view_site", "POST": "format_the_disk"}

        def get(self, request):  # pragma: no cover - never called
            raise AssertionError

        def post(self, request):  # pragma: no cover
            raise AssertionError

        def delete(self, request):  # pragma: no cover
            raise AssertionError

    class Unchecked(APIView):
        operations = {"GET": "view_site"}
        permission_classes: list = []

        def get(self, request):  # pragma: no cover
            raise AssertionError

    assert outside_the_rule_set([(Sneaky, {}), (Unchecked, {})]) == [
        "Sneaky.post: operation 'format_the_disk'",
        "Sneaky.delete: operation None",
        "Unchecked: its permission classes leave out ApiPermission",
    ]


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
        # through a relation: a backup's site, a site's latest job
        ("admin:sites_backup_changelist", "site__db_password__startswith=a"),
        ("admin:sites_site_changelist", "last_job__traceback__contains=x"),
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


def test_behind_the_proxy_failures_from_one_client_do_not_lock_the_user_name_out_for_another(
    client, settings, behind_the_proxy
):
    settings.WPFLEET_LOGIN_FAILURES = 3
    get_user_model().objects.create_user("target", password="the-right-one-1", is_staff=True)
    url = reverse("admin:login")

    def attempt(client_address: str, password: str, forged: str = ""):
        return client.post(url, {"username": "target", "password": password}, **forwarded(client_address, forged))

    for i in range(3):  # a new forged address each time does not reset the count
        assert "Please enter the correct" in attempt("203.0.113.9", "guess", forged=f"198.51.100.{i}").content.decode()
    assert "Too many failed logins" in attempt("203.0.113.9", "the-right-one-1").content.decode()
    assert attempt("198.51.100.20", "the-right-one-1").status_code == 302, "the operator's own address is not locked"


def test_spraying_user_names_from_one_address_is_refused_past_the_per_address_limit(client, settings):
    settings.WPFLEET_LOGIN_FAILURES = 3
    settings.WPFLEET_LOGIN_ADDRESS_FAILURES = 5
    get_user_model().objects.create_user("target", password="the-right-one-1", is_staff=True)
    url = reverse("admin:login")
    for i in range(5):  # one guess per name: no name reaches its own limit
        wrong = client.post(url, {"username": f"guess{i}", "password": "guess"})
        assert "Please enter the correct" in wrong.content.decode()
    refused = client.post(url, {"username": "target", "password": "the-right-one-1"})
    assert "Too many failed logins" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert elsewhere.post(url, {"username": "target", "password": "the-right-one-1"}).status_code == 302


def test_login_attempts_arriving_together_check_no_more_passwords_than_the_limit(rf, settings, monkeypatch):
    from django.contrib.auth import forms as auth_forms

    settings.WPFLEET_LOGIN_FAILURES = 3
    checked: list[str] = []

    def attempt() -> None:
        form = ThrottledAdminAuthenticationForm(rf.post("/admin/login/"), data={"username": "t", "password": "guess"})
        assert not form.is_valid()

    def slow_check(request, **credentials):
        # While this password is being checked, the next attempt arrives: ten in flight at once.
        checked.append(credentials["username"])
        if len(checked) < 10:
            attempt()
        return None

    monkeypatch.setattr(auth_forms, "authenticate", slow_check)
    attempt()
    assert len(checked) == 3


def test_a_successful_login_does_not_count_as_a_failure(client, settings):
    settings.WPFLEET_LOGIN_FAILURES = 2
    get_user_model().objects.create_user("target", password="the-right-one-1", is_staff=True)
    url = reverse("admin:login")
    for _ in range(3):
        assert client.post(url, {"username": "target", "password": "the-right-one-1"}).status_code == 302
        client.logout()
    assert "Please enter the correct" in client.post(url, {"username": "target", "password": "x"}).content.decode()
    assert client.post(url, {"username": "target", "password": "the-right-one-1"}).status_code == 302


# --- admin options that would list, sort or search by a secret -------------------------------


def test_an_admin_that_searches_sorts_filters_or_shows_a_secret_field_stops_manage_py_check():
    from django.contrib import admin
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from hosting.checks import secret_fields_stay_out_of_admin_lists

    class CarelessSiteAdmin(admin.ModelAdmin):
        search_fields = ["name", "=db_password"]
        ordering = ["-db_password"]
        list_display = ["name", "last_job__traceback", "password_order"]
        list_filter = ["status", ("last_job__traceback", admin.AllValuesFieldListFilter)]
        sortable_by = ["password_order"]

        @admin.display(ordering="db_password")
        def password_order(self, site):  # pragma: no cover - never rendered
            return ""

    throwaway = admin.AdminSite(name="throwaway")
    throwaway.register(Site, CarelessSiteAdmin)
    errors = [error for error in secret_fields_stay_out_of_admin_lists() if error.obj is CarelessSiteAdmin]
    assert {error.id for error in errors} == {"wpfleet.E001"}
    assert sorted(error.msg.split(" names ")[0] for error in errors) == [
        "CarelessSiteAdmin.list_display",
        "CarelessSiteAdmin.list_display",
        "CarelessSiteAdmin.list_filter",
        "CarelessSiteAdmin.ordering",
        "CarelessSiteAdmin.search_fields",
        "CarelessSiteAdmin.sortable_by",
    ]
    assert "sites.Site.db_password" in errors[0].msg or "jobs.Job.traceback" in errors[0].msg
    with pytest.raises(SystemCheckError, match="wpfleet.E001"):
        call_command("check", stdout=open(os.devnull, "w"))


def test_the_shipped_admins_name_no_secret_field():
    from hosting.checks import secret_fields_stay_out_of_admin_lists

    shipped = [e for e in secret_fields_stay_out_of_admin_lists() if not e.obj.__module__.startswith("tests.")]
    assert shipped == []


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

    monkeypatch.setattr(reconcile, "View", lambda infra, **options: object())
    monkeypatch.setattr(reconcile, "attach_caddy_to_shards", lambda infra, view: [])
    monkeypatch.setattr(reconcile, "_emptied_volumes", lambda infra, view: {})
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


# --- ownership of database accounts: the record is two-phase ----------------------------------


class Crash(Exception):
    """The worker dies here."""


class FakeMariaDB:
    """Just enough of a MariaDB server for the panel's account statements: accounts, databases, its records."""

    def __init__(self, *, state_column: bool = True) -> None:
        self.accounts: dict[tuple[str, str], str] = {}  # (user, host) -> password
        self.grants: dict[tuple[str, str], list[str]] = {}
        self.databases: dict[str, str] = {}  # name -> comment
        self.records: dict[tuple[str, str], dict[str, str]] = {}  # wpfleet_meta.owned_users
        self.state_column = state_column
        self.statements: list[str] = []
        self.crash_at = ""  # a statement prefix at which the worker dies

    @contextmanager
    def cursor(self, admin=None):
        import MySQLdb

        try:
            yield self
        except MySQLdb.Error as exc:
            raise InfraError("mariadb", f"({exc.args[0]}) {exc.args[1]}") from None

    def execute(self, sql: str, args: tuple = ()) -> None:
        import MySQLdb

        sql = " ".join(sql.split())
        self.statements.append(sql)
        if self.crash_at and sql.startswith(self.crash_at):
            raise Crash(sql)
        self.rows: list[tuple] = []
        key = tuple(args[:2])
        if sql.startswith("SELECT SCHEMA_COMMENT"):
            self.rows = [(self.databases[args[0]],)] if args[0] in self.databases else []
        elif sql.startswith("SELECT 1 FROM mysql.global_priv"):
            self.rows = [(1,)] if key in self.accounts else []
        elif sql.startswith("SELECT 1 FROM information_schema.COLUMNS"):
            self.rows = [(1,)] if self.state_column else []
        elif sql.startswith("ALTER TABLE") and "ADD COLUMN IF NOT EXISTS state" in sql:
            self.state_column = True
            for record in self.records.values():
                record.setdefault("state", "created")
        elif sql.startswith(("CREATE DATABASE IF NOT EXISTS `wpfleet_meta`", "CREATE TABLE IF NOT EXISTS")):
            pass
        elif sql.startswith("CREATE DATABASE IF NOT EXISTS"):
            self.databases.setdefault(sql.split("`")[1], args[0])
        elif sql.startswith("SELECT owner, site"):
            columns = sql.split(" FROM ")[0].removeprefix("SELECT ").split(", ")
            if "state" in columns and not self.state_column:
                raise MySQLdb.OperationalError(1054, "Unknown column 'state'")
            self.rows = [tuple(self.records[key][c] for c in columns)] if key in self.records else []
        elif sql.startswith("INSERT IGNORE INTO"):
            columns = sql.split("(")[1].split(")")[0].split(", ")
            row = dict(zip(columns, args, strict=True))
            if "state" in row and not self.state_column:
                raise MySQLdb.OperationalError(1054, "Unknown column 'state'")
            if key not in self.records:
                self.records[key] = {"state": "created", **row} if self.state_column else row
        elif sql.startswith("UPDATE"):
            record = self.records.get(tuple(args[1:3]))
            if record is not None and (record["owner"], record["site"]) == tuple(args[3:5]):
                record["state"] = args[0]
        elif sql.startswith("DELETE FROM"):
            record = self.records.get(key)
            if record is not None and (record["owner"], record["site"]) == tuple(args[2:4]):
                del self.records[key]
        elif sql.startswith("CREATE USER"):
            if key in self.accounts:
                raise MySQLdb.OperationalError(1396, "Operation CREATE USER failed")
            self.accounts[key] = args[2]
        elif sql.startswith("ALTER USER"):
            self.accounts[key] = args[2]
        elif sql.startswith("GRANT"):
            self.grants.setdefault(key, []).append(sql)
        elif sql.startswith("DROP USER IF EXISTS"):
            self.accounts.pop(key, None)
            self.grants.pop(key, None)
        elif sql.startswith("DROP DATABASE IF EXISTS"):
            self.databases.pop(sql.split("`")[1], None)
        else:  # pragma: no cover - a statement this fake does not know
            raise AssertionError(f"unexpected statement {sql}")

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


@pytest.fixture
def server(monkeypatch) -> FakeMariaDB:
    fake = FakeMariaDB()
    monkeypatch.setattr(MariaDBAdmin, "cursor", fake.cursor)
    return fake


ACCOUNT = ("wp_victim", "10.200.0.0/255.255.0.0")


def ensure(database: str = "wp_victim", password: str = "ours-1") -> None:
    MariaDBAdmin().ensure_site_database("victim", database, *ACCOUNT, password, 30, 60)


def drop() -> str | None:
    return MariaDBAdmin().drop_site_database("victim", "wp_victim", *ACCOUNT)


def test_a_crash_before_create_user_leaves_a_pending_claim_that_the_retry_completes(server, settings):
    server.crash_at = "CREATE USER"
    with pytest.raises(Crash):
        ensure()
    assert server.records[ACCOUNT]["state"] == "pending" and ACCOUNT not in server.accounts
    assert MariaDBAdmin().user_owner(*ACCOUNT) is None, "a pending claim proves no ownership"
    server.crash_at = ""
    ensure()  # the account is missing: ours to create
    assert server.accounts[ACCOUNT] == "ours-1" and server.grants[ACCOUNT]
    assert server.records[ACCOUNT]["state"] == "created"
    assert MariaDBAdmin().user_owner(*ACCOUNT) == (settings.WPFLEET_OWNER, "victim")
    assert drop() is None and ACCOUNT not in server.accounts and ACCOUNT not in server.records


def test_an_account_found_under_a_pending_claim_is_foreign_never_altered_nor_dropped(server, settings):
    server.crash_at = "CREATE USER"
    with pytest.raises(Crash):
        ensure()
    server.crash_at = ""
    server.accounts[ACCOUNT] = "theirs-1"  # someone else made wp_victim in the gap
    server.grants[ACCOUNT] = ["GRANT SELECT ON `theirs`.* TO ..."]
    before = len(server.statements)
    with pytest.raises(ForeignResource, match="exists and is not wpfleet's"):
        ensure()
    assert drop() == f"database user {ACCOUNT[0]}@{ACCOUNT[1]} is not wpfleet's: left untouched"
    issued = server.statements[before:]
    assert not [sql for sql in issued if sql.startswith(("ALTER USER", "GRANT", "DROP USER", "CREATE USER"))]
    assert server.accounts[ACCOUNT] == "theirs-1" and server.grants[ACCOUNT] == ["GRANT SELECT ON `theirs`.* TO ..."]
    assert ACCOUNT not in server.records, "the stale claim is gone"


def test_an_account_appearing_between_the_claim_and_create_user_is_left_to_its_maker(server, monkeypatch):
    real_exists = MariaDBAdmin.user_exists
    monkeypatch.setattr(MariaDBAdmin, "user_exists", lambda self, user, host: False)  # checked before it appeared
    server.accounts[ACCOUNT] = "theirs-1"
    with pytest.raises(ForeignResource, match="appeared concurrently"):
        ensure()
    monkeypatch.setattr(MariaDBAdmin, "user_exists", real_exists)
    assert server.accounts[ACCOUNT] == "theirs-1" and ACCOUNT not in server.grants and ACCOUNT not in server.records


def test_records_from_before_the_two_phases_stay_wpfleets(monkeypatch, settings):
    server = FakeMariaDB(state_column=False)
    monkeypatch.setattr(MariaDBAdmin, "cursor", server.cursor)
    server.records[ACCOUNT] = {
        "user": ACCOUNT[0],
        "host": ACCOUNT[1],
        "owner": settings.WPFLEET_OWNER,
        "site": "victim",
    }
    server.accounts[ACCOUNT] = "ours-0"
    ensure(password="ours-2")  # the retry of an older attempt: our account, this attempt's password
    assert server.records[ACCOUNT]["state"] == "created" and server.accounts[ACCOUNT] == "ours-2"
    assert drop() is None and ACCOUNT not in server.accounts


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


def test_check_deploy_names_an_unpinned_image_of_any_php_version(settings):
    from hosting.checks import images_are_pinned

    pinned = "wordpress:php8.2-fpm@sha256:" + "0" * 64
    settings.WPFLEET_PHP_IMAGE = pinned
    settings.WPFLEET_NGINX_IMAGE = "nginx:alpine@sha256:" + "1" * 64
    settings.WPFLEET_PHP_VERSIONS = {"8.2": pinned, "8.4": "wordpress:php8.4-fpm"}
    warnings = images_are_pinned()
    assert [(w.id, w.msg.split(" is ")[0]) for w in warnings] == [
        ("wpfleet.W001", "WPFLEET_PHP_VERSIONS['8.4']='wordpress:php8.4-fpm'")
    ]


def test_make_venv_installs_nothing_unhashed_before_the_lock():
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): pyproject.toml requirements.lock\n", 1)[1].split("\n\n", 1)[0]
    installs = re.findall(r"pip install[^;&|}\n]*", recipe)
    assert installs, "the venv recipe installs the lock"
    for command in installs:
        # Only the lock, by its hashes, and then the project itself (no dependencies).
        assert "--require-hashes" in command or command.split()[-2:] == ["-e", "."], command


# --- the production checklist and the README say what is true -------------------------------


def test_docs_deploy_cites_only_files_that_exist():
    text = (REPO / "docs" / "deploy.md").read_text()
    cited = set(re.findall(r"`((?:sites|hosting|jobs|lab|scripts|docs|tests)/[\w./-]+\.(?:py|sh|md|example))`", text))
    assert cited, "the checklist cites the code it describes"
    assert sorted(path for path in cited if not (REPO / path).exists()) == []


SECRETS_TO_ROTATE = [
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "WPFLEET_ENCRYPTION_KEYS",
    "WPFLEET_DB_ADMIN_PASSWORD",
    "WPFLEET_BACKUP_PASSWORD",
    "WPFLEET_BACKUP_SFTP_KEY_FILE",
    "WPFLEET_BACKUP_SFTP_KNOWN_HOSTS",
    "WPFLEET_BACKUP_S3_ACCESS_KEY_ID",
    "WPFLEET_BACKUP_S3_SECRET_ACCESS_KEY",
    "WPFLEET_ADMIN_PASSWORD",
    "WPFLEET_LAB_DB_ROOT_PASSWORD",
]


def first_table_after(path: Path, heading: str) -> str:
    """The rows of the first Markdown table after ``heading``."""
    after = path.read_text().split(heading, 1)[1]
    lines = after[after.index("\n|") :].splitlines()[1:]
    return "\n".join(line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))])


@pytest.mark.parametrize("path, heading", [("README.md", "Rotating each secret"), ("docs/deploy.md", "## 2. Secrets")])
def test_the_rotation_tables_say_how_to_rotate_every_secret(path, heading):
    table = first_table_after(REPO / path, heading)
    assert [name for name in SECRETS_TO_ROTATE if name not in table] == []
    (site_row,) = [line for line in table.splitlines() if "site's database password" in line]
    assert "ALTER USER" in site_row, "a site's database password has a procedure, not only a description"


@pytest.mark.parametrize(
    "path, heading", [("README.md", "## Who may do what"), ("docs/deploy.md", "## 5. Who may do what")]
)
def test_the_group_tables_grant_what_the_migration_grants(path, heading):
    table = first_table_after(REPO / path, heading)
    for group, permissions in GROUPS.items():
        (row,) = [line for line in table.splitlines() if f"**{group}**" in line]
        named = set(re.findall(r"`(\w+_\w+)`", row.split("|")[2]))
        assert named == {permission.split(".")[1] for permission in permissions}, group
