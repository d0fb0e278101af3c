"""The shared Caddy container: one route file per hostname, and HTTPS requests through it.

Caddy's configuration (lab/caddy/Caddyfile) never changes while sites come
and go. It serves a hostname only if ``<routes dir>/<hostname>`` exists:
that file lets Caddy get a certificate for the name (on-demand TLS asks an
endpoint that checks for it) and lets requests through to the upstream
``<hostname>.wpfleet.invalid``, a network alias of the site's nginx on the
backend network.

So creating or deleting a site reloads nothing. A reload hands Caddy's
listeners from the old server to the new one, and connections arriving at
that moment were reset (measured on 2.6 and 2.11: a few per sixty reloads,
for every site on the host); a file appearing is seen by the next request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
from django.conf import settings

from sites.infra.docker_host import DockerHost
from sites.infra.errors import ForeignResource, InfraError

# Caddy proxies a hostname to "<hostname>.wpfleet.invalid": a network alias of
# the site's nginx on the backend network. A name under .invalid never
# resolves in public DNS (RFC 2606), so a hostname without its alias (being
# re-attached, or gone) gets no answer, never an address its owner's DNS chose.
UPSTREAM_SUFFIX = ".wpfleet.invalid"


def upstream_alias(host: str) -> str:
    return host + UPSTREAM_SUFFIX


def owner_marker() -> str:
    # Route files carry no labels: this first line marks the ones that are ours.
    return f"# wpfleet owner={settings.WPFLEET_OWNER}"


def route_content(site: str) -> str:
    return f"{owner_marker()} site={site}\n"


@dataclass(frozen=True)
class Answer:
    """One HTTP response from Caddy, read whole."""

    status_code: int
    headers: dict[str, str]
    text: str
    cookies: tuple[str, ...] = ()  # each Set-Cookie header as sent
    content: bytes = b""  # the body as sent

    def json(self) -> Any:
        return json.loads(self.text)


class Caddy:
    def __init__(self, docker_host: DockerHost) -> None:
        self.docker = docker_host
        self.container_name = settings.WPFLEET_CADDY_CONTAINER
        self.routes_dir = settings.WPFLEET_CADDY_ROUTES_DIR.rstrip("/")
        self._pools: dict[str, urllib3.HTTPSConnectionPool] = {}
        self._pools_lock = threading.Lock()

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

    # --- route files -------------------------------------------------------------

    def route_path(self, host: str) -> str:
        return f"{self.routes_dir}/{host}"

    def route_owner(self, host: str) -> str | None:
        """The site a route names as its own; "" for a file that is not ours; None when there is none."""
        content = self.docker.read_file(self._container(), self.route_path(host))
        return None if content is None else _owner_of(content.split("\n", 1)[0])

    def check_not_foreign(self, site: str, host: str) -> None:
        """Refuse (permanently) when a route for this host exists and is not this site's."""
        if self.route_owner(host) not in (None, site):
            raise ForeignResource("caddy", f"{self.route_path(host)} exists and is not this site's; left untouched")

    def add_route(self, site: str, host: str) -> None:
        """Route ``host`` to the site (its nginx answers to the alias ``host``); never over another's file."""
        self.check_not_foreign(site, host)
        self.docker.put_files(self._container(), self.routes_dir, {host: (route_content(site).encode(), 0o644, 0, 0)})

    def remove_route(self, site: str, host: str) -> tuple[bool, str | None]:
        """Remove the route if it is the site's: (whether one was removed, a note if one was left)."""
        owner = self.route_owner(host)
        if owner is None:
            return False, None
        if owner != site:
            return False, f"{self.route_path(host)} not this site's: left untouched"
        code, output = self.docker.exec(self._container(), ["rm", "-f", self.route_path(host)])
        if code != 0:
            raise InfraError("caddy", f"could not remove the route of {host}: {_last_line(output)}")
        return True, None

    def routes(self) -> dict[str, str]:
        """Every route of ours: {hostname: site}, read from the owner marker of each file."""
        return self._listing(self.routes_dir)

    def _listing(self, directory: str) -> dict[str, str]:
        """{hostname: site} of our marker files directly in ``directory`` (one exec)."""
        # -s and exit 2: a directory not made yet (no site was ever suspended) lists nothing.
        code, output = self.docker.exec(self._container(), ["grep", "-rsHF", owner_marker() + " site=", directory])
        if code not in (0, 1, 2):
            raise InfraError("caddy", f"could not list {directory}: {_last_line(output)}")
        found: dict[str, str] = {}
        for line in output.splitlines():
            path, _, first = line.partition(":")
            owner = _owner_of(first)
            name = path[len(directory) + 1 :] if path.startswith(directory + "/") else ""
            # Files directly in the directory only (the routes' listing leaves .suspended/ out).
            if owner and name and "/" not in name:
                found[name] = owner
        return found

    # --- suspended sites ---------------------------------------------------------------
    # A file routes/.suspended/<hostname> (ours, beside the route) makes Caddy
    # answer the hostname with a 503 page (lab/caddy/Caddyfile).

    @property
    def suspended_dir(self) -> str:
        return f"{self.routes_dir}/.suspended"

    def suspend(self, site: str, host: str) -> None:
        """Answer ``host`` with the suspended page (never over another's file)."""
        owner = self._owner_at(f"{self.suspended_dir}/{host}")
        if owner not in (None, site):
            raise ForeignResource("caddy", f"{self.suspended_dir}/{host} exists and is not this site's; left untouched")
        self.docker.put_files(
            self._container(), self.routes_dir, {f".suspended/{host}": (route_content(site).encode(), 0o644, 0, 0)}
        )

    def unsuspend(self, site: str, host: str) -> str | None:
        """Serve ``host`` again (remove its suspended file, if it is the site's); a note if one was left."""
        path = f"{self.suspended_dir}/{host}"
        owner = self._owner_at(path)
        if owner is None:
            return None
        if owner != site:
            return f"{path} not this site's: left untouched"
        code, output = self.docker.exec(self._container(), ["rm", "-f", path])
        if code != 0:
            raise InfraError("caddy", f"could not remove {path}: {_last_line(output)}")
        return None

    def suspensions(self) -> dict[str, str]:
        """Every suspended hostname of ours: {hostname: site}."""
        return self._listing(self.suspended_dir)

    def _owner_at(self, path: str) -> str | None:
        content = self.docker.read_file(self._container(), path)
        return None if content is None else _owner_of(content.split("\n", 1)[0])

    # --- requests through Caddy --------------------------------------------------

    def get(self, host: str, path: str = "/", timeout: float = 5) -> Answer:
        """GET https://<host><path> from Caddy, verifying its certificate for that name (see ``request``)."""
        return self.request("GET", host, path, timeout=timeout)

    def request(
        self,
        method: str,
        host: str,
        path: str = "/",
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5,
    ) -> Answer:
        """An HTTPS request to ``host`` through this host's Caddy.

        The connection goes to WPFLEET_CADDY_URL (whatever DNS says about the
        name) with the hostname as SNI and Host header; the certificate must
        chain to WPFLEET_CA_BUNDLE (the system's authorities when empty).
        ``fields`` are sent form-encoded. Redirects are returned, not
        followed. Connection and TLS failures raise InfraError (a retry may help).
        """
        all_headers = {"Host": host, **(headers or {})}
        body = None
        if fields is not None:
            body = urlencode(fields)
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            response = self._pool(host).request(
                method,
                path,
                body=body,
                headers=all_headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(total=timeout),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InfraError("caddy", f"https://{host}{path}: {exc.__class__.__name__}: {exc}") from exc
        headers_out = {name: value for name, value in response.headers.items()}
        cookies = response.headers.getlist("Set-Cookie")
        return Answer(
            response.status, headers_out, response.data.decode("utf-8", "replace"), tuple(cookies), response.data
        )

    def get_plain_http(self, host: str, path: str = "/", timeout: float = 5) -> Answer:
        """GET http://<host><path> from Caddy's plain-HTTP listener (WPFLEET_CADDY_HTTP_URL)."""
        url = urlsplit(settings.WPFLEET_CADDY_HTTP_URL)
        pool = urllib3.HTTPConnectionPool(url.hostname or "127.0.0.1", url.port or 80, maxsize=1)
        try:
            response = pool.request(
                "GET", path, headers={"Host": host}, redirect=False, retries=False, timeout=urllib3.Timeout(timeout)
            )
        except urllib3.exceptions.HTTPError as exc:
            raise InfraError("caddy", f"http://{host}{path}: {exc.__class__.__name__}: {exc}") from exc
        finally:
            pool.close()
        return Answer(response.status, dict(response.headers), response.data.decode("utf-8", "replace"))

    def _pool(self, host: str) -> urllib3.HTTPSConnectionPool:
        with self._pools_lock:
            pool = self._pools.get(host)
            if pool is None:
                url = urlsplit(settings.WPFLEET_CADDY_URL)
                pool = urllib3.HTTPSConnectionPool(
                    url.hostname or "127.0.0.1",
                    url.port or 443,
                    server_hostname=host,
                    assert_hostname=host,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=settings.WPFLEET_CA_BUNDLE or None,
                    maxsize=4,
                )
                self._pools[host] = pool
            return pool

    def close(self) -> None:
        with self._pools_lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


def _owner_of(first_line: str) -> str:
    """The site named by a route file's first line, or "" if the line is not our marker."""
    marker = owner_marker() + " site="
    return first_line[len(marker) :].strip() if first_line.startswith(marker) else ""


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no output)"
