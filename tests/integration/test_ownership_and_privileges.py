"""On the real lab: wpfleet harms nothing it does not own, and holds no more power than it needs.

The foreign resources here are made by the test as MariaDB's root or straight
through Docker, the way another tool or a person would, and are removed by
the test at the end.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import MySQLdb
import pytest
from django.conf import settings

from hosting.env import read_dotenv
from jobs.models import Job
from sites.infra.errors import InfraError
from sites.models import Site
from sites.ops.cleanup import cleanup
from tests.conftest import unique_name
from tests.integration.conftest import fetch, leftovers

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def root_password() -> str:
    password = read_dotenv(REPO / ".env").get("WPFLEET_LAB_DB_ROOT_PASSWORD", "")
    assert password, "the lab's .env has no WPFLEET_LAB_DB_ROOT_PASSWORD (run lab/up.sh)"
    return password


@pytest.fixture(scope="session")
def as_root(root_password):
    """Run one statement as MariaDB's root (the test's own connection, not the panel's)."""

    def run(sql: str, args: tuple = ()) -> tuple:
        conn = MySQLdb.connect(
            host=settings.WPFLEET_DB_ADMIN["host"],
            port=settings.WPFLEET_DB_ADMIN["port"],
            user="root",
            password=root_password,
            autocommit=True,
        )
        try:
            cur = conn.cursor()
            cur.execute(sql, args)
            return cur.fetchall()
        finally:
            conn.close()

    return run


def account_state(as_root, user: str, host: str) -> tuple:
    """Everything MariaDB keeps about an account: password hash and limits, and its grants."""
    return as_root("SELECT Priv FROM mysql.global_priv WHERE User = %s AND Host = %s", (user, host)), as_root(
        "SHOW GRANTS FOR %s@%s", (user, host)
    )


def final_job(site: Site) -> Job:
    site.refresh_from_db()
    return site.last_job


def test_a_foreign_site_account_keeps_its_password_and_privileges_through_a_failed_create_and_a_cleanup(
    make_site, as_root, infra
):
    name = unique_name("fu")
    user, host = f"wp_{name}", settings.WPFLEET_DB_USER_HOST
    as_root("CREATE USER %s@%s IDENTIFIED BY 'theirs-not-ours-1'", (user, host))
    try:
        as_root(f"GRANT SELECT ON `other\\_{name}`.* TO %s@%s", (user, host))
        before = account_state(as_root, user, host)

        site = make_site(name)
        job = final_job(site)
        assert job.status == Job.Status.FAILED and job.is_final
        assert job.attempts == 1, "a foreign name is not retried"
        assert f"{user}@{host} exists and is not wpfleet's" in job.error
        assert account_state(as_root, user, host) == before

        report = cleanup(sites=[Site.objects.get(name=name)], include_orphans=False)
        assert not report.errors
        assert account_state(as_root, user, host) == before
        assert leftovers(infra, name) == [f"database user {user}@{host} exists, not wpfleet's"]
    finally:
        as_root("DROP USER IF EXISTS %s@%s", (user, host))


def test_a_foreign_account_made_while_wpfleets_claim_was_pending_keeps_its_password_and_privileges(
    make_site, as_root, infra
):
    name = unique_name("fp")
    user, host = f"wp_{name}", settings.WPFLEET_DB_USER_HOST
    meta = settings.WPFLEET_DB_META_SCHEMA
    try:
        # An earlier attempt recorded its claim, then its worker died before CREATE USER ...
        with infra.db.cursor() as cur:
            infra.db._ensure_meta(cur)
            assert infra.db._claim_user(cur, name, user, host)
        state = as_root(f"SELECT state FROM `{meta}`.owned_users WHERE user = %s AND host = %s", (user, host))
        assert state == (("pending",),)
        # ... and in that gap someone else created an account of that name.
        as_root("CREATE USER %s@%s IDENTIFIED BY 'theirs-not-ours-2'", (user, host))
        as_root(f"GRANT SELECT ON `other\\_{name}`.* TO %s@%s", (user, host))
        before = account_state(as_root, user, host)

        site = make_site(name)
        job = final_job(site)
        assert job.status == Job.Status.FAILED and job.is_final
        assert job.attempts == 1, "a foreign name is not retried"
        assert f"{user}@{host} exists and is not wpfleet's" in job.error
        assert account_state(as_root, user, host) == before

        report = cleanup(sites=[Site.objects.get(name=name)], include_orphans=False)
        assert not report.errors
        assert account_state(as_root, user, host) == before
        assert leftovers(infra, name) == [f"database user {user}@{host} exists, not wpfleet's"]
        assert infra.db.user_record(user, host) is None, "the stale claim is gone, the account stays"
    finally:
        as_root("DROP USER IF EXISTS %s@%s", (user, host))
        as_root(f"DELETE FROM `{meta}`.owned_users WHERE user = %s AND host = %s", (user, host))


def route_digest(infra, path: str) -> str:
    caddy = infra.docker.container(settings.WPFLEET_CADDY_CONTAINER)
    code, output = infra.docker.exec(caddy, ["sha256sum", path])
    assert code == 0, output
    return output.split()[0]


def test_a_foreign_caddy_route_stays_byte_identical(make_site, infra):
    name = unique_name("fc")
    path = Site(name=name).names.route
    directory, filename = path.rsplit("/", 1)
    caddy = infra.docker.container(settings.WPFLEET_CADDY_CONTAINER)
    infra.docker.put_files(caddy, directory, {filename: (b"# somebody else's route\n", 0o644, 0, 0)})
    try:
        original = route_digest(infra, path)
        site = make_site(name)
        job = final_job(site)
        assert job.status == Job.Status.FAILED and job.is_final and job.attempts == 1
        assert f"{path} exists and is not this site's" in job.error
        assert route_digest(infra, path) == original

        assert not cleanup(sites=[Site.objects.get(name=name)], include_orphans=False).errors
        assert route_digest(infra, path) == original
        assert leftovers(infra, name) == [f"Caddy route {path} exists, not this site's"]
    finally:
        infra.docker.exec(caddy, ["rm", "-f", path])


def test_the_panel_uses_its_own_account_without_global_all_privileges(infra):
    with infra.db.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        (account,) = cur.fetchone()
        cur.execute("SHOW GRANTS")
        grants = [row[0] for row in cur.fetchall()]
    assert not account.startswith("root@")
    assert not any(re.search(r"GRANT ALL PRIVILEGES ON \*\.\*", grant) for grant in grants), grants
    assert not any("WITH GRANT OPTION" in grant and " ON *.*" in grant for grant in grants), grants
    # It sees which accounts exist, never their password hashes.
    with pytest.raises(InfraError, match="denied"):
        with infra.db.cursor() as cur:
            cur.execute("SELECT Priv FROM mysql.global_priv LIMIT 1")


def test_a_site_account_may_log_in_only_from_the_sites_address_range_with_a_statement_time_limit(make_site, as_root):
    site = make_site()
    assert site.status == Site.Status.ACTIVE
    hosts = as_root("SELECT Host, max_statement_time FROM mysql.user WHERE User = %s", (site.names.db_user,))
    assert [(host, float(limit)) for host, limit in hosts] == [
        (settings.WPFLEET_DB_USER_HOST, settings.WPFLEET_DB_MAX_STATEMENT_SECONDS)
    ]
    assert "%" not in hosts[0][0]
    # and from there, it works: WordPress reaches its database
    page = fetch(site.name)
    assert page.status_code == 200 and "WordPress" in page.text


PHP_CONNECT = (
    "$pw = trim(file_get_contents('/run/secrets/wordpress_db_password'));"
    "[$h, $p] = explode(':', getenv('WORDPRESS_DB_HOST'));"
    "$open = function () use ($h, $p, $pw) {"
    " return new mysqli($h, getenv('WORDPRESS_DB_USER'), $pw, getenv('WORDPRESS_DB_NAME'), (int) $p); };"
)


def php(infra, container: str, code: str, detach: bool = False) -> str:
    result = infra.docker.container(container).exec_run(
        ["php", "-r", PHP_CONNECT + code], user="www-data", detach=detach
    )
    return "" if detach else result.output.decode()


def test_one_site_at_its_connection_limit_does_not_keep_another_from_its_database(make_site, infra, settings):
    settings.WPFLEET_DB_MAX_USER_CONNECTIONS = 3
    greedy = make_site()
    settings.WPFLEET_DB_MAX_USER_CONNECTIONS = 30
    bystander = make_site()
    assert greedy.status == bystander.status == Site.Status.ACTIVE

    php(
        infra,
        greedy.names.php,
        "$held = [$open(), $open(), $open()]; file_put_contents('/tmp/held', 'yes'); sleep(30);",
        detach=True,
    )
    deadline = time.monotonic() + 20
    while infra.docker.container(greedy.names.php).exec_run(["test", "-f", "/tmp/held"]).exit_code != 0:
        assert time.monotonic() < deadline, "the greedy site never opened its connections"
        time.sleep(0.2)

    one_more = "try { $open(); echo 'connected'; } catch (mysqli_sql_exception $e) { echo 'refused ', $e->getCode(); }"
    assert php(infra, greedy.names.php, one_more) == "refused 1226"  # ER_TOO_MANY_USER_CONNECTIONS
    assert php(infra, bystander.names.php, one_more) == "connected"
    page = fetch(bystander.name)
    assert page.status_code == 200 and "WordPress" in page.text


def test_the_lab_root_password_is_in_no_container_environment_and_no_process_arguments(root_password, infra):
    client = infra.docker.client
    for container in client.containers.list(all=True):
        config = container.attrs.get("Config") or {}
        shown = " ".join(
            [
                *(config.get("Env") or []),
                *(config.get("Cmd") or []),
                *(config.get("Entrypoint") or []),
                *(container.attrs.get("Args") or []),
            ]
        )
        assert root_password not in shown, f"container {container.name} shows MariaDB's root password"
    checked = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (proc / part).read_bytes()
            except OSError:
                continue  # gone, or a kernel thread
            checked += 1
            assert root_password.encode() not in data, f"process {proc.name} has the root password in its {part}"
    assert checked > 10
