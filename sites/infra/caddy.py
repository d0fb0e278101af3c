"""The shared Caddy container: per-site snippets and zero-downtime reloads."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from django.conf import settings

from sites.infra.docker_host import DockerHost
from sites.infra.errors import ForeignResource, InfraError

# A staged snippet: in sites/, but not matched by the Caddyfile's *.caddy import.
PENDING = ".caddy.pending"


def owner_marker() -> str:
    # Snippets carry no labels: this first line marks the ones that are ours.
    return f"# wpfleet owner={settings.WPFLEET_OWNER}"


class Caddy:
    def __init__(self, docker_host: DockerHost) -> None:
        self.docker = docker_host
        self.container_name = settings.WPFLEET_CADDY_CONTAINER
        self.config = settings.WPFLEET_CADDY_CONFIG
        self.sites_dir = settings.WPFLEET_CADDY_SITES_DIR.rstrip("/")
        run_dir = Path(settings.VAR_DIR) / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_path = run_dir / f"caddy-reload-{self.container_name}.lock"
        self._state_path = run_dir / f"caddy-reload-{self.container_name}.state"

    def _container(self):
        container = self.docker.container(self.container_name)
        if container is None:
            raise InfraError("caddy", f"container {self.container_name} does not exist")
        if container.status != "running":
            raise InfraError("caddy", f"container {self.container_name} is {container.status}, not running")
        return container

    def ping(self) -> None:
        self._container()

    def ensure_running(self) -> bool:
        """Start the Caddy container if it is stopped (after an engine crash); True if it was."""
        container = self.docker.container(self.container_name)
        if container is None:
            raise InfraError("caddy", f"container {self.container_name} does not exist")
        if container.status == "running":
            return False
        self.docker.start(container)
        return True

    def _path(self, site: str, suffix: str = ".caddy") -> str:
        return f"{self.sites_dir}/{site}{suffix}"

    def stage(self, site: str, content: str) -> None:
        """Write the snippet beside the live ones, where the import glob does not see it, and check it.

        A bad snippet in sites/ would make every later reload fail, for every
        site; so it is parsed on its own first. Staging in the same directory
        lets `install` publish it with an atomic rename: a concurrent reload by
        another job never reads half a file.
        """
        container = self._container()
        pending = self._path(site, PENDING)
        self.docker.put_files(container, self.sites_dir, {pending.rsplit("/", 1)[1]: (content.encode(), 0o644, 0, 0)})
        code, output = self.docker.exec(container, ["caddy", "adapt", "--config", pending, "--adapter", "caddyfile"])
        if code != 0:
            self.docker.exec(container, ["rm", "-f", pending])
            raise InfraError("caddy", f"snippet for {site} is invalid: {_last_line(output)}")

    def install(self, site: str) -> None:
        code, output = self.docker.exec(self._container(), ["mv", "-f", self._path(site, PENDING), self._path(site)])
        if code != 0:
            raise InfraError("caddy", f"could not install snippet of {site}: {_last_line(output)}")

    def is_ours(self, site: str, content: str | None) -> bool:
        return content is not None and content.split("\n", 1)[0] == f"{owner_marker()} site={site}"

    def _read(self, path: str) -> str | None:
        code, output = self.docker.exec(self._container(), ["cat", path])
        return output + "\n" if code == 0 else None

    def check_not_foreign(self, site: str) -> None:
        """Refuse (permanently) when a snippet with this site's file name exists and is not ours."""
        for path in (self._path(site), self._path(site, PENDING)):
            content = self._read(path)
            if content is not None and not self.is_ours(site, content):
                raise ForeignResource("caddy", f"{path} exists and is not wpfleet's; it was left untouched")

    def read_pending(self, site: str) -> str | None:
        return self._read(self._path(site, PENDING))

    def running_config(self) -> dict:
        """The configuration Caddy is serving now, from its admin API inside the container."""
        request = 'printf "GET /config/ HTTP/1.0\\r\\nHost: 127.0.0.1:2019\\r\\n\\r\\n" >&3'
        code, output = self.docker.exec(
            self._container(), ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/2019 && {request} && cat <&3"]
        )
        head, _, body = output.partition("\r\n\r\n")
        if code != 0 or " 200 " not in head.split("\r\n", 1)[0]:
            raise InfraError("caddy", f"could not read the running config: {_last_line(output)}")
        try:
            return json.loads(body or "null") or {}
        except ValueError:
            raise InfraError("caddy", "the running config is not JSON") from None

    def has_snippet(self, site: str) -> bool:
        return self.docker.file_exists(self._container(), f"{self.sites_dir}/{site}.caddy")

    def read_snippet(self, site: str) -> str | None:
        return self._read(self._path(site))

    def remove(self, site: str) -> tuple[bool, str | None]:
        """Remove the site's snippet (and a staged one) if ours.

        Returns (whether a live snippet was removed, a note naming a file left
        because it is not ours).
        """
        live, pending = self._path(site), self._path(site, PENDING)
        ours: list[str] = []
        foreign: list[str] = []
        for path in (live, pending):
            content = self._read(path)
            if content is not None:
                (ours if self.is_ours(site, content) else foreign).append(path)
        if ours:
            code, output = self.docker.exec(self._container(), ["rm", "-fv", *ours])
            if code != 0:
                raise InfraError("caddy", f"could not remove snippet of {site}: {_last_line(output)}")
        note = f"{', '.join(foreign)} not wpfleet's: left untouched" if foreign else None
        return live in ours, note

    def snippet_sites(self) -> list[str]:
        """Sites that have a snippet of ours (by the owner marker on its first line)."""
        code, output = self.docker.exec(
            self._container(), ["grep", "-rlF", "--include=*.caddy", owner_marker() + " site=", self.sites_dir]
        )
        if code not in (0, 1):
            raise InfraError("caddy", f"could not list {self.sites_dir}: {_last_line(output)}")
        return sorted(
            line.rsplit("/", 1)[-1][: -len(".caddy")] for line in output.splitlines() if line.endswith(".caddy")
        )

    def reload(self) -> None:
        code, output = self.docker.exec(
            self._container(), ["caddy", "reload", "--config", self.config, "--adapter", "caddyfile"]
        )
        if code != 0:
            raise InfraError("caddy", f"reload failed, the previous config keeps running: {_last_line(output)}")

    def reload_covering(self, changed_at: float) -> bool:
        """Make sure a reload that started after ``changed_at`` has succeeded.

        Jobs that finish together queue on a file lock; the first one reloads
        for all of them and the rest find a reload newer than their change and
        return at once. Returns True if this call did the reload.
        """
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self._last_reload_started() >= changed_at:
                    return False
                started = time.time()
                self.reload()
                tmp = self._state_path.with_suffix(f".{os.getpid()}")
                tmp.write_text(repr(started))
                tmp.replace(self._state_path)
                return True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _last_reload_started(self) -> float:
        try:
            return float(self._state_path.read_text())
        except (OSError, ValueError):
            return 0.0


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no output)"
