"""The bench's process environment, Django set-up, and what the results record about the machine."""

from __future__ import annotations

import os
import platform
import subprocess

from bench import config


def setup_django() -> None:
    """Point this process at the bench's database and owner, then set Django up.

    Must run before anything imports settings: settings read the environment once.
    """
    os.environ.update(config.bench_env())
    import django

    django.setup()


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, cwd=config.REPO, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_info() -> dict:
    status = _run(["git", "status", "--porcelain"])
    return {
        "commit": _run(["git", "rev-parse", "HEAD"]),
        "branch": _run(["git", "rev-parse", "--abbrev-ref", "HEAD"]),
        # Uncommitted changes mean the numbers are for a tree no commit names.
        "dirty_files": len(status.splitlines()) if status else 0,
    }


def _meminfo_total_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _runtime_version(docker_info: dict) -> str | None:
    name = docker_info.get("DefaultRuntime")
    path = ((docker_info.get("Runtimes") or {}).get(name) or {}).get("path") or name
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def machine_info() -> dict:
    from sites.infra.docker_host import DockerHost

    info: dict = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": _meminfo_total_mb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        client = DockerHost().client
        version = client.version()
        docker_info = client.info()
        info["docker"] = {
            "version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "cgroup_version": docker_info.get("CgroupVersion"),
            "cgroup_driver": docker_info.get("CgroupDriver"),
            "storage_driver": docker_info.get("Driver"),
            # What starts and execs the containers made during the run (those
            # made before keep theirs): its cost grows with the host's mounts.
            "default_runtime": docker_info.get("DefaultRuntime"),
            "runtime_version": _runtime_version(docker_info),
            # Other containers share the engine and the CPUs: context for the numbers.
            "containers_running_at_start": docker_info.get("ContainersRunning"),
        }
    except Exception as exc:  # the record is informative; a failure here must not stop the bench
        info["docker"] = {"error": str(exc)}
    return info


def settings_info(plan: config.Plan) -> dict:
    from django.conf import settings

    return {
        "control_db": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "owner": settings.WPFLEET_OWNER,
        "workers_default": plan.workers,
        "poll_seconds": settings.WPFLEET_POLL_SECONDS,
        "php_seed_from": settings.WPFLEET_PHP_SEED_FROM,
        "php_opcache": settings.WPFLEET_PHP_OPCACHE,
        "step_threads": settings.WPFLEET_STEP_THREADS,
        "php_pm": settings.WPFLEET_PHP_PM,
        "php_image": settings.WPFLEET_PHP_IMAGE,
        "nginx_image": settings.WPFLEET_NGINX_IMAGE,
        "php_limits": settings.WPFLEET_PHP_LIMITS,
        "nginx_limits": settings.WPFLEET_NGINX_LIMITS,
        "live_timeout_s": settings.WPFLEET_LIVE_TIMEOUT_SECONDS,
        "max_attempts": settings.WPFLEET_MAX_ATTEMPTS,
        "api_rate": dict(settings.REST_FRAMEWORK)["DEFAULT_THROTTLE_RATES"]["user"],
        "web": {"bind": config.WEB_BIND, "gunicorn_workers": config.WEB_WORKERS, "threads": config.WEB_THREADS},
        "base_domain": settings.WPFLEET_BASE_DOMAIN,
        "caddy_url": settings.WPFLEET_CADDY_URL,
        # Every WPFLEET_* setting, so that one added later is recorded too; no secrets.
        "all_wpfleet": _public_wpfleet_settings(settings),
    }


def _public_wpfleet_settings(settings) -> dict:
    out = {}
    for name in sorted(dir(settings)):
        if not name.startswith("WPFLEET_") or "PASSWORD" in name:
            continue
        value = getattr(settings, name)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if "password" not in k.lower()}
        elif isinstance(value, (set, frozenset, tuple)):
            value = sorted(value)
        out[name] = value
    return out


def infra_started_at() -> dict[str, str | None]:
    """When the shared containers last started: a change during a section means an engine or lab restart."""
    from django.conf import settings

    from sites.infra.docker_host import DockerHost

    docker = DockerHost()
    out: dict[str, str | None] = {}
    for name in (settings.WPFLEET_CADDY_CONTAINER, "wpfleet-mariadb"):
        try:
            container = docker.container(name)
            out[name] = container.attrs["State"]["StartedAt"] if container else None
        except Exception:
            out[name] = None
    return out


def code_fingerprint() -> str:
    """A hash of the product's Python files (not bench/): a change during a section is flagged."""
    import hashlib

    digest = hashlib.sha1()
    for top in ("hosting", "sites", "jobs"):
        for path in sorted((config.REPO / top).rglob("*.py")):
            try:
                digest.update(str(path.relative_to(config.REPO)).encode())
                digest.update(path.read_bytes())
            except OSError:
                pass
    return digest.hexdigest()[:12]
