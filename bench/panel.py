"""The bench's own panel: a fresh control database, gunicorn on :8100 and worker clusters.

Children run in their own sessions so that a Ctrl-C in the terminal reaches
only the bench, which then stops them in order (a worker killed mid-job would
leave a half-built site for the cleanup to find).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from bench import config


class Child:
    """A subprocess in its own session, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None
        self.log_offset = 0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"\n--- bench: {self.name} starting at {time.strftime('%F %T')} ---\n".encode())
            out.flush()
            self.log_offset = out.tell()
            self.process = subprocess.Popen(
                self.argv,
                cwd=config.REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_since_start(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """TERM the leader only, KILL the whole group after ``timeout``.

        The leader shuts its children down in order (django-q2 lets a running
        task finish; gunicorn drains requests). A TERM to the whole group
        would kill django-q2's worker processes at once (they keep the default
        TERM action) and leave its sentinel waiting for them.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Stragglers of the group (a process orphaned by its parent's exit).
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _port_in_use(bind: str) -> bool:
    host, port = bind.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def check_migrations() -> None:
    """Refuse to start workers on code newer than the bench's database.

    Others commit in this checkout while the bench runs; a cluster started
    later imports the new models and would fail on every job.
    """
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        missing = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan)
        raise RuntimeError(f"the code changed since the bench started (unapplied migrations: {missing}); run again")


class BenchPanel:
    """Everything of the panel the bench runs: database, users, web server, worker cluster."""

    def __init__(self) -> None:
        self.env = {**os.environ, **config.bench_env()}
        self.web: Child | None = None
        self.cluster: Child | None = None
        self.cluster_workers = 0
        # How long each cluster took to answer, for the record.
        self.cluster_starts: list[dict] = []

    # --- database and users --------------------------------------------------

    def fresh_database(self) -> None:
        """Delete the bench's SQLite file and migrate a new one in this process."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{config.DB_FILE}{suffix}").unlink(missing_ok=True)
        from django.core.management import call_command
        from django.db import connection

        connection.close()
        call_command("migrate", interactive=False, verbosity=0)

    def fresh_repository(self) -> dict:
        """Delete and create the bench's own restic repository (config.BACKUP_REPOSITORY), if it is the one in use.

        Done with the control database: snapshots of an earlier run belong to rows that no longer exist.
        """
        import shutil

        from django.conf import settings

        from sites.infra.restic import BackupRepository

        if settings.WPFLEET_BACKUP_REPOSITORY != str(config.BACKUP_REPOSITORY):
            return {"repository": None, "why": "no backup repository configured: backups are off"}
        started = time.monotonic()
        shutil.rmtree(config.BACKUP_REPOSITORY, ignore_errors=True)
        config.BACKUP_REPOSITORY.parent.mkdir(parents=True, exist_ok=True)
        try:
            BackupRepository().init()
        except Exception as exc:  # the backups section fails on it; the others need no repository
            return {"repository": str(config.BACKUP_REPOSITORY), "error": f"{exc.__class__.__name__}: {exc}"[:300]}
        return {"repository": str(config.BACKUP_REPOSITORY), "init_s": round(time.monotonic() - started, 3)}

    def tokens(self, count: int, prefix: str = "bench") -> list[str]:
        """``count`` operators (the "Site operators" group) with a DRF token each (one per
        API client: the throttle is per user)."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group
        from rest_framework.authtoken.models import Token

        user_model = get_user_model()
        operators = Group.objects.get(name="Site operators")
        keys = []
        for i in range(count):
            # No password: hashing costs a quarter second each and the API uses tokens.
            user, _ = user_model.objects.get_or_create(username=f"{prefix}{i:02d}", defaults={"is_staff": True})
            user.groups.add(operators)
            keys.append(Token.objects.get_or_create(user=user)[0].key)
        return keys

    # --- web server ------------------------------------------------------------

    def start_web(self, timeout: float = 60.0) -> None:
        if _port_in_use(config.WEB_BIND):
            raise RuntimeError(f"{config.WEB_BIND} is already taken: another bench or server runs there")
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self.web = Child(
            "web",
            [
                gunicorn,
                "hosting.wsgi",
                "-b",
                config.WEB_BIND,
                "--workers",
                str(config.WEB_WORKERS),
                "--threads",
                str(config.WEB_THREADS),
                "--timeout",
                "60",
                "--error-logfile",
                "-",
            ],
            self.env,
            config.LOG_DIR / "bench-web.log",
        )
        self.web.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.web.alive():
                raise RuntimeError(f"gunicorn exited; see {self.web.log}")
            try:
                if requests.get(f"{config.WEB_URL}/admin/login/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout:g}s; see {self.web.log}")

    # --- worker cluster ----------------------------------------------------------

    def ensure_cluster(self, workers: int, timeout: float = 90.0) -> None:
        """A running cluster of ``workers`` processes; an existing one of that size is kept."""
        if self.cluster is not None and self.cluster.alive() and self.cluster_workers == workers:
            return
        self.stop_cluster()
        check_migrations()
        self.cluster = Child(
            f"worker cluster ({workers} workers)",
            [sys.executable, "manage.py", "run_worker"],
            {**self.env, "WPFLEET_WORKERS": str(workers)},
            config.LOG_DIR / "bench-worker.log",
        )
        self.cluster_workers = workers
        started = time.monotonic()
        self.cluster.start()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if not self.cluster.alive():
                raise RuntimeError(f"the worker cluster exited; see {self.cluster.log}")
            # django-q2 logs this once the sentinel has spawned every worker and the pusher.
            if " running." in self.cluster.log_since_start():
                self.cluster_starts.append({"workers": workers, "seconds": round(time.monotonic() - started, 3)})
                return
            time.sleep(0.1)
        raise RuntimeError(f"the worker cluster did not start within {timeout:g}s; see {self.cluster.log}")

    def stop_cluster(self) -> None:
        if self.cluster is not None:
            # django-q2 lets running tasks finish on TERM; a job takes seconds, not minutes.
            self.cluster.stop(timeout=60)
            self.cluster = None
            self.cluster_workers = 0

    def stop_all(self) -> None:
        self.stop_cluster()
        if self.web is not None:
            self.web.stop(timeout=15)
            self.web = None
