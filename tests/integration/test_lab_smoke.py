"""Smoke test of the lab itself (lab/up.sh), independent of the product code.

A PHP-FPM and an nginx container from the lab images serve a PHP page through
the lab's Caddy for a test host name, the way a provisioned site is wired:

    127.0.0.1:8080 -> caddy (wp_backend) -> nginx (wp_backend + private net)
                   -> php-fpm (private net) -> volume at /var/www/html

Only the Docker SDK and requests are used (no Django database), so a failure
here points at the lab, not at the provisioner. Everything created is removed
by a finalizer, even when the test fails half-way.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterator

import docker
import pytest
import requests

pytestmark = pytest.mark.integration

PHP_IMAGE = os.environ.get("WPFLEET_PHP_IMAGE", "wpfleet-lab/wordpress:php8.2-fpm")
NGINX_IMAGE = os.environ.get("WPFLEET_NGINX_IMAGE", "wpfleet-lab/nginx:alpine")
CADDY_CONTAINER = os.environ.get("WPFLEET_CADDY_CONTAINER", "caddy")
BACKEND_NETWORK = os.environ.get("WPFLEET_BACKEND_NETWORK", "wp_backend")
CADDY_URL = os.environ.get("WPFLEET_CADDY_URL", "http://127.0.0.1:8080")
BASE_DOMAIN = os.environ.get("WPFLEET_BASE_DOMAIN", "wpfleet.test")

CADDY_SITES = "/etc/caddy/sites"
CADDY_RELOAD = ["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
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

SNIPPET = """\
http://{host} {{
\tencode gzip
\treverse_proxy {nginx}:80
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


def reload_caddy(caddy) -> None:
    exec_ok(caddy, CADDY_RELOAD)


def get(host: str, path: str = "/") -> requests.Response:
    return requests.get(CADDY_URL + path, headers={"Host": host}, allow_redirects=False, timeout=10)


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
    cleanup(lambda: nginx.remove(force=True))
    client.networks.get(BACKEND_NETWORK).connect(nginx)
    assert nginx.put_archive("/etc/nginx/conf.d", tar_of({"default.conf": NGINX_CONF.format(php=php.name).encode()}))
    nginx.start()

    snippet = f"{name}.caddy"
    cleanup(lambda: reload_caddy(caddy))
    cleanup(lambda: exec_ok(caddy, ["rm", "-f", f"{CADDY_SITES}/{snippet}"]))
    assert caddy.put_archive(CADDY_SITES, tar_of({snippet: SNIPPET.format(host=host, nginx=nginx.name).encode()}))
    reload_caddy(caddy)

    # php-fpm and nginx need a moment to listen; Caddy answers 502 until then.
    deadline = time.monotonic() + 30
    while True:
        response = get(host)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}"
    assert "lab-ok 8.2" in response.text


def test_unknown_host_gets_404_from_caddy():
    response = get(f"lab-smoke-absent-{secrets.token_hex(4)}.{BASE_DOMAIN}")
    assert response.status_code == 404
