"""Reachability of each dependency, for /api/health and the operators."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from sites.infra.caddy import Caddy
from sites.infra.docker_host import DockerHost
from sites.infra.errors import InfraError
from sites.infra.mariadb import MariaDBAdmin
from sites.infra.restic import BackupRepository

# Opening the repository runs restic (its key derivation alone takes about
# half a second): a probe's answer serves the health checks of a minute.
BACKUPS_PROBE_SECONDS = 60


def _control_db() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _probe(check) -> dict:
    started = time.monotonic()
    try:
        check()
    except InfraError as exc:
        return {"ok": False, "error": exc.message, "ms": round((time.monotonic() - started) * 1000)}
    except Exception as exc:  # any failure of a dependency is a report, never a 500
        return {
            "ok": False,
            "error": f"{exc.__class__.__name__}: {exc}"[:300],
            "ms": round((time.monotonic() - started) * 1000),
        }
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000)}


def check_all() -> dict[str, dict]:
    docker_host = DockerHost()
    checks = {
        "docker": docker_host.ping,
        "mariadb": MariaDBAdmin().ping,
        "caddy": Caddy(docker_host).ping,
    }
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        futures = {name: pool.submit(_probe, check) for name, check in checks.items()}
        report = {name: future.result() for name, future in futures.items()}
    report["control_db"] = _probe(_control_db)
    if settings.WPFLEET_BACKUP_REPOSITORY:
        report["backups"] = backups_probe()
    return report


def backups_probe() -> dict:
    """The backup repository opens with its password (cached for a minute)."""
    key = "wpfleet:health:backups:" + hashlib.sha256(settings.WPFLEET_BACKUP_REPOSITORY.encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = _probe(lambda: BackupRepository().ping())
        cache.set(key, found, BACKUPS_PROBE_SECONDS)
    return found
