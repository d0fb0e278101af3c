"""Smoke test of the lab itself (lab/up.sh), independent of the product code.

A PHP-FPM and an nginx container from the lab images serve a PHP page through
the lab's Caddy for a test host name, the way a provisioned site is wired:

    https://<host> (127.0.0.1:443, SNI <host>) -> caddy (wp_backend)
        -> <host>.wpfleet.invalid:80 = nginx (that alias on wp_backend; private net)
        -> php-fpm (private net) -> volume at /var/www/html

Caddy's config (lab/caddy/Caddyfile) never changes and is never reloaded: it
serves a hostname while the file /etc/caddy/routes/<hostname> exists, with a
certificate from its own local CA (on-demand TLS, whose `ask` endpoint checks
for that file), proxying to the upstream `<hostname>.wpfleet.invalid:80`. So
the test connects its nginx to wp_backend with that network alias, writes
the route file, and requests https://<host>/ trusting only the lab's CA
(WPFLEET_CA_BUNDLE). It also checks plain HTTP (308 to https for a routed
host, 404 for an unknown one), that an unknown host gets no certificate, and
that removing the route file turns the host into a 404 "no such site" at
once.

Only the Docker SDK and urllib3 are used (no Django database, nothing of the
panel's provisioning), so a failure here points at the lab, not at the
provisioner. Settings come from the environment, then `.env`, as the panel
reads them. Everything created is removed by a finalizer, even when the test
fails half-way.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import docker
import pytest
import urllib3

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@cache
def _dotenv() -> dict[str, str]:
    """KEY=value lines of `.env` (WPFLEET_DOTENV names another file), read without the panel's code."""
    path = Path(os.environ.get("WPFLEET_DOTENV") or REPO / ".env")
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().removeprefix("export ").partition("=")
            if sep and key and not key.startswith("#"):
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                values[key.strip()] = value
    return values


def setting(name: str, default: str) -> str:
    """The process environment wins over `.env`, like the panel's settings."""
    return os.environ.get(name, _dotenv().get(name, default))


PHP_IMAGE = setting("WPFLEET_PHP_IMAGE", "wpfleet-lab/wordpress:php8.2-fpm")
NGINX_IMAGE = setting("WPFLEET_NGINX_IMAGE", "wpfleet-lab/nginx:alpine")
CADDY_CONTAINER = setting("WPFLEET_CADDY_CONTAINER", "caddy")
BACKEND_NETWORK = setting("WPFLEET_BACKEND_NETWORK", "wp_backend")
CADDY_URL = urlsplit(setting("WPFLEET_CADDY_URL", "https://127.0.0.1:443"))
CADDY_HTTP_URL = urlsplit(setting("WPFLEET_CADDY_HTTP_URL", "http://127.0.0.1:80"))
CA_BUNDLE = setting("WPFLEET_CA_BUNDLE", str(REPO / "var" / "lab-ca.crt"))
BASE_DOMAIN = setting("WPFLEET_BASE_DOMAIN", "wpfleet.test")

ROUTES_DIR = "/etc/caddy/routes"  # fixed by lab/caddy/Caddyfile
# Not the panel's marker ("# wpfleet owner=... site=..."): the panel leaves this file alone.
ROUTE_CONTENT = b"# lab smoke test (tests/integration/test_lab_smoke.py)\n"
WWW_DATA = 33  # uid/gid of www-data in the lab images (Debian)
LABELS = {"wpfleet.lab": "smoke"}  # never wpfleet.owner: these are not sites

INDEX_PHP = b'<?php echo "lab-ok ".PHP_VERSION;'

NGINX_CONF = """\
server {{
    listen 80;
    root /var/www/html;
    index index.php;
    location / {{ try_files $uri $uri/ /index.php?$args; }}
    location ~ \\.php$ {{
        fastcgi_pass {php}:9000;
        fastcgi_index index.php;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
    }}
}}
"""


def tar_of(files: dict[str, bytes], uid: int = 0, gid: int = 0) -> bytes:
    """An uncompressed tar holding `files` (name -> content), for put_archive."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.uid, info.gid = uid, gid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def exec_ok(container, cmd: list[str]) -> str:
    code, output = container.exec_run(cmd)
    text = output.decode(errors="replace")
    assert code == 0, f"{' '.join(cmd)} in {container.name} exited {code}: {text}"
    return text


def get_https(host: str, path: str = "/") -> urllib3.BaseHTTPResponse:
    """GET https://<host><path> from the lab's Caddy on a new connection: SNI and Host are
    the host name, the certificate must be valid for it and chain to the lab's CA."""
    pool = urllib3.HTTPSConnectionPool(
        CADDY_URL.hostname or "127.0.0.1",
        CADDY_URL.port or 443,
        server_hostname=host,
        assert_hostname=host,
        cert_reqs="CERT_REQUIRED",
        ca_certs=CA_BUNDLE or None,
        maxsize=1,
    )
    try:
        return pool.request(
            "GET", path, headers={"Host": host}, redirect=False, retries=False, timeout=urllib3.Timeout(10)
        )
    finally:
        pool.close()


def get_http(host: str, path: str = "/") -> urllib3.BaseHTTPResponse:
    """GET http://<host><path> from the lab's Caddy (its plain-HTTP port)."""
    pool = urllib3.HTTPConnectionPool(CADDY_HTTP_URL.hostname or "127.0.0.1", CADDY_HTTP_URL.port or 80, maxsize=1)
    try:
        return pool.request(
            "GET", path, headers={"Host": host}, redirect=False, retries=False, timeout=urllib3.Timeout(10)
        )
    finally:
        pool.close()


def text(response: urllib3.BaseHTTPResponse) -> str:
    return response.data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    # "auto": the lab's engine (Debian's 20.10) speaks an older API than the SDK's default
    client = docker.from_env(version="auto")
    client.ping()
    yield client
    client.close()


@pytest.fixture
def cleanup(request) -> Callable[[Callable[[], object]], None]:
    """Register undo steps; they run in reverse order, all of them, even on failure."""
    steps: list[Callable[[], object]] = []

    def run_all() -> None:
        errors = []
        for step in reversed(steps):
            try:
                step()
            except docker.errors.NotFound:
                pass
            except Exception as exc:  # keep undoing the rest, report at the end
                errors.append(repr(exc))
        assert not errors, f"cleanup failed: {errors}"

    request.addfinalizer(run_all)
    return steps.append


def test_php_page_served_through_caddy(client, cleanup):
    name = f"lab-smoke-{secrets.token_hex(4)}"
    host = f"{name}.{BASE_DOMAIN}"
    caddy = client.containers.get(CADDY_CONTAINER)
    route = f"{ROUTES_DIR}/{host}"

    net = client.networks.create(f"{name}-net", driver="bridge", labels=LABELS)
    cleanup(net.remove)
    vol = client.volumes.create(f"{name}-html", labels=LABELS)
    cleanup(lambda: vol.remove(force=True))

    # index.php goes into the volume before php-fpm starts, so the entrypoint
    # finds it and does not copy WordPress over the volume.
    php = client.containers.create(
        PHP_IMAGE,
        command=["php-fpm"],
        name=f"{name}-php",
        network=net.name,
        volumes={vol.name: {"bind": "/var/www/html", "mode": "rw"}},
        labels=LABELS,
    )
    cleanup(lambda: php.remove(force=True))
    assert php.put_archive("/var/www/html", tar_of({"index.php": INDEX_PHP}, WWW_DATA, WWW_DATA))
    php.start()

    nginx = client.containers.create(
        NGINX_IMAGE,
        name=f"{name}-nginx",
        network=net.name,
        volumes={vol.name: {"bind": "/var/www/html", "mode": "ro"}},
        labels=LABELS,
    )
    cleanup(lambda: nginx.remove(force=True))  # also takes it (and its alias) off wp_backend
    # Caddy proxies to <host>:80: the host name must resolve to this nginx on wp_backend.
    client.networks.get(BACKEND_NETWORK).connect(nginx, aliases=[f"{host}.wpfleet.invalid"])
    assert nginx.put_archive("/etc/nginx/conf.d", tar_of({"default.conf": NGINX_CONF.format(php=php.name).encode()}))
    nginx.start()

    # The route file is all Caddy needs: no reload.
    cleanup(lambda: exec_ok(caddy, ["rm", "-f", route]))
    assert caddy.put_archive(ROUTES_DIR, tar_of({host: ROUTE_CONTENT}))

    # php-fpm and nginx need a moment to listen; Caddy answers 502 until then.
    deadline = time.monotonic() + 30
    while True:
        response = get_https(host)
        if response.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert response.status == 200, f"{response.status}: {text(response)[:500]}"
    assert "lab-ok 8.2" in text(response)

    # Plain HTTP for a routed host: a permanent redirect to the same URL over https.
    response = get_http(host, "/some/path?x=1")
    assert response.status == 308, f"{response.status}: {text(response)[:500]}"
    assert response.headers.get("Location") == f"https://{host}/some/path?x=1"

    # Without its route file the host is unknown at once (still no reload).
    exec_ok(caddy, ["rm", "-f", route])
    response = get_https(host)
    assert response.status == 404, f"{response.status}: {text(response)[:500]}"
    assert "no such site" in text(response)


def test_unknown_host_gets_404_from_caddy():
    host = f"lab-smoke-absent-{secrets.token_hex(4)}.{BASE_DOMAIN}"
    response = get_http(host)
    assert response.status == 404, f"{response.status}: {text(response)[:500]}"
    assert "no such site" in text(response)
    # Over HTTPS the handshake itself fails: on-demand TLS's `ask` refuses a
    # certificate and Caddy answers with an alert (not a certificate we reject).
    with pytest.raises(urllib3.exceptions.SSLError, match="(?i)alert internal error"):
        get_https(host)
