"""Fixtures for tests against the real lab: Docker engine, MariaDB, Caddy, nginx, PHP-FPM."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from jobs.models import Job
from jobs.runner import run_job
from sites.infra.caddy import Answer, Caddy
from sites.infra.docker_host import DockerHost
from sites.models import Site
from sites.provisioning.orchestrator import Provisioner
from sites.provisioning.shards import owned_shards, retire_empty_shards
from sites.provisioning.steps import Infra, observe_site
from sites.services import create_site
from tests.conftest import unique_name

REPO = Path(__file__).resolve().parents[2]
# Whether a site's PHP /tmp is the overlay wptmp_<name> over the compiled WordPress every site
# shares (sites.provisioning.steps.shares_compiled_core): one volume more a site.
SHARED_COMPILED_CORE = bool(
    settings.WPFLEET_QUOTA_ROOT and settings.WPFLEET_PHP_SEED_FROM and settings.WPFLEET_PHP_OPCACHE == "file"
)


@pytest.fixture(scope="session")
def infra(django_db_setup, django_db_blocker) -> Iterator[Infra]:
    lab = Infra()
    # Fail loudly, never skip: these tests are the proof that the product works.
    lab.docker.ping()
    lab.db.ping()
    lab.caddy.ping()
    before = set(owned_shards(lab.docker.network_summaries()).values())
    yield lab
    # The backend shards the tests made (a small shard size makes several) go with
    # them; only those (django_db_setup: the test database is still there).
    with django_db_blocker.unblock():
        try:
            made = set(owned_shards(lab.docker.network_summaries()).values()) - before
            retire_empty_shards(lab, among=made)
        except Exception as exc:  # the engine may be what a test left stopped: say so, fail nothing
            print(f"the tests' empty backend shards were not removed: {exc}")


def fetch(name: str, path: str = "/wp-admin/install.php", timeout: float = 10) -> Answer:
    """GET https://<name>.<base domain><path> through the lab's Caddy, trusting only the lab's CA."""
    return _front().get(f"{name}.{settings.WPFLEET_BASE_DOMAIN}", path, timeout=timeout)


def fetch_plain_http(name: str, path: str = "/") -> Answer:
    """The same over plain HTTP (Caddy's port 80)."""
    return _front().get_plain_http(f"{name}.{settings.WPFLEET_BASE_DOMAIN}", path)


@functools.cache
def _front() -> Caddy:
    # urllib3's pools are thread-safe: the Prober's thread shares this one.
    return Caddy(DockerHost())


def leftovers(infra: Infra, name: str) -> list[str]:
    """Everything of a site that still exists, by name, whoever owns it.

    What every provisioning step observes (sites.provisioning.steps): the
    database and its account, the files and page cache volumes, the network,
    the PHP-FPM container (and a PHP switch's ``php_<name>-next``), the nginx
    container and its server block, the WordPress install, and a route file
    per hostname in Caddy's routes directory, which Caddy reads at each
    request (there is no running config of a site's to check). Plus an
    account of the site's name at any other database host.
    """
    found = [str(resource) for resource in observe_site(name, infra) if resource.exists]
    user = Site(name=name).names.db_user
    found += [
        f"database user {user}@{host}" for host in infra.db.user_hosts(user) if host != settings.WPFLEET_DB_USER_HOST
    ]
    return found


def force_remove(infra: Infra, name: str) -> None:
    """Last-resort cleanup so that one failing test leaks nothing into the next."""
    try:
        Provisioner(name, "", infra=infra).deprovision()
    except Exception:
        pass


@pytest.fixture
def make_site(infra, transactional_db):
    """Create a site through the service and run its job in this process, as a worker would."""
    created: list[str] = []

    def make(name: str | None = None, *, run: bool = True, max_attempts: int | None = None) -> Site:
        name = name or unique_name()
        created.append(name)
        site = create_site(name)
        if max_attempts is not None:
            Job.objects.filter(pk=site.current_job_id).update(max_attempts=max_attempts)
        if run:
            run_to_end(site.current_job_id)
            site.refresh_from_db()
        return site

    # A test that makes a site another way (a clone) adds its name here for the cleanup.
    make.created = created  # type: ignore[attr-defined]
    yield make
    for name in created:
        force_remove(infra, name)


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    return f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


WORKER_LOG = REPO / "var" / "log" / "test-worker.log"


def start_cluster(**env_overrides: str) -> subprocess.Popen:
    """Start `manage.py run_worker` (housekeeping, then the django-q2 cluster) on the test database."""
    WORKER_LOG.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "WPFLEET_WORKERS": os.environ.get("WPFLEET_WORKERS", "2"),
        # Each test's database is new, so every scheduled backup job would be
        # due at once: the tests that want backups start them themselves.
        "WPFLEET_BACKUP_EVERY_HOURS": "0",
        "WPFLEET_PANEL_BACKUP_EVERY_HOURS": "0",
        "WPFLEET_BACKUP_MAINTENANCE_EVERY_HOURS": "0",
        **env_overrides,
    }
    with open(WORKER_LOG, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_cluster(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop the cluster: SIGTERM to its main process stops it gracefully, as `make down` does;
    SIGKILL goes to the whole process group (the cluster and its workers), like a crash."""
    try:
        if sig == signal.SIGKILL:
            os.killpg(process.pid, sig)
        else:
            os.kill(process.pid, sig)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture
def worker_cluster(transactional_db, infra):
    """The real django-q2 cluster (manage.py run_worker) working on the test database."""
    process = start_cluster()
    yield process
    stop_cluster(process)


# --- helpers for the reliability tests (tests/reliability) -------------------------------


def run_to_end(job_id: int, timeout: float = 300) -> Job:
    """Run a job in this process as the cluster would, attempt after attempt, until it is final.

    ``run_job`` is one attempt; a failed attempt with attempts left is WAITING
    until its due time, so wait for that (bounded) and run it again.
    """
    deadline = time.monotonic() + timeout
    while True:
        run_job(job_id)
        job = Job.objects.get(pk=job_id)
        if job.is_final:
            return job
        if time.monotonic() >= deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s: {job.error}")
        if job.status == Job.Status.WAITING and job.next_attempt_at is not None:
            time.sleep(min(max(0.0, (job.next_attempt_at - timezone.now()).total_seconds()) + 0.01, 5))
        else:
            time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def worker_pid(job: Job) -> int:
    """The pid of the worker process holding a job (jobs.runner.worker_id: host:pid:random)."""
    return int(job.worker.rsplit(":", 2)[-2])


def lab_up() -> None:
    """`lab/up.sh`: start whatever of the lab is stopped (engine, MariaDB, Caddy), as an operator would."""
    result = subprocess.run(
        [str(REPO / "lab" / "up.sh")], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise AssertionError(
            f"lab/up.sh failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    connection.close()  # the control database may be on the MariaDB that was restarted
