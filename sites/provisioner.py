"""Building and tearing down a site: an ordered list of small steps.

Each step has ``apply`` and ``undo``, both idempotent and keyed on the site's
deterministic names and owner labels, so any step can be run again after a
crash and any undo can run whether or not its apply ever finished.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Protocol

import requests
from django.conf import settings
from docker.types import Mount

from sites.infra.caddy import Caddy, snippet_for
from sites.infra.docker_host import DockerHost
from sites.infra.errors import InfraError
from sites.infra.mariadb import MariaDBAdmin
from sites.naming import SiteNames

# Where the PHP container finds its database password: a file, not an
# environment variable, so `docker inspect` does not show it.
DB_PASSWORD_FILE = "/run/secrets/wordpress_db_password"
WWW_DATA = 33  # uid/gid of www-data in the official images and Debian's


class Infra:
    """The adapters, created on first use and shared by the steps of a run."""

    @cached_property
    def docker(self) -> DockerHost:
        return DockerHost()

    @cached_property
    def db(self) -> MariaDBAdmin:
        return MariaDBAdmin()

    @cached_property
    def caddy(self) -> Caddy:
        return Caddy(self.docker)


@dataclass
class Context:
    site: str
    db_password: str
    infra: Infra
    notes: list[str] = field(default_factory=list)
    snippet_written_at: float = 0.0

    @cached_property
    def names(self) -> SiteNames:
        return SiteNames(self.site)

    def note(self, message: str | None) -> None:
        if message:
            self.notes.append(message)


class Step(Protocol):
    name: str
    # Names of the steps that must be done first; unset: all earlier steps.
    needs: tuple[str, ...]

    def apply(self, ctx: Context) -> None: ...

    def undo(self, ctx: Context) -> None: ...


# --- the steps, in the seed's order ----------------------------------------------


class DatabaseStep:
    name = "database"
    needs = ()

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        ctx.infra.db.ensure_site_database(
            ctx.site, n.database, n.db_user, settings.WPFLEET_DB_USER_HOST, ctx.db_password,
            settings.WPFLEET_DB_MAX_USER_CONNECTIONS, settings.WPFLEET_DB_MAX_STATEMENT_SECONDS,
        )

    def undo(self, ctx: Context) -> None:
        n = ctx.names
        ctx.note(ctx.infra.db.drop_site_database(ctx.site, n.database, n.db_user, settings.WPFLEET_DB_USER_HOST))


class VolumeStep:
    name = "volume"
    needs = ()

    def apply(self, ctx: Context) -> None:
        ctx.infra.docker.ensure_volume(ctx.names.volume, ctx.names.labels("volume"))

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.docker.remove_volume(ctx.names.volume, ctx.names.labels("volume")))


class NetworkStep:
    """A network for the site's PHP-FPM and nginx only (not in the seed).

    On the seed's shared wp_backend any container could speak FastCGI to any
    site's PHP-FPM and run code as that site; here only nginx joins wp_backend.
    """

    name = "network"
    needs = ()

    def apply(self, ctx: Context) -> None:
        ctx.infra.docker.ensure_network(ctx.names.network, ctx.names.labels("network"))

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.docker.remove_network(ctx.names.network, ctx.names.labels("network")))


def _limits(limits: dict) -> dict:
    return {
        "mem_limit": limits["memory"],
        # Swap equal to memory: no swap beyond the limit.
        "memswap_limit": limits["memory"],
        "nano_cpus": int(limits["cpus"] * 1e9),
        "pids_limit": limits["pids"],
        "restart_policy": {"Name": "unless-stopped"},
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "log_config": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}},
    }


def php_pool_config() -> str:
    # Appended after the image's own pool files: ondemand keeps an idle site
    # at a single master process.
    return (
        "[www]\n"
        f"pm = {settings.WPFLEET_PHP_PM}\n"
        f"pm.max_children = {settings.WPFLEET_PHP_MAX_CHILDREN}\n"
        "pm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = 1\n"
        "pm.process_idle_timeout = 10s\n"
        "pm.max_requests = 500\n"
    )


def php_ini() -> str:
    if settings.WPFLEET_PHP_OPCACHE == "shm":
        return ""
    # Compiled scripts in files instead of shared memory: an opcache in shared
    # memory keeps about 20 MB per visited WordPress site that the kernel can
    # never reclaim; in files they are page cache, reclaimed under pressure,
    # for about 15 ms more per request (measured on the lab, docs/performance.md).
    return "opcache.file_cache = /tmp\nopcache.file_cache_only = 1\n"


def php_mounts(volume: str) -> list[Mount]:
    mounts = [Mount(target="/var/www/html", source=volume, type="volume")]
    if settings.WPFLEET_PHP_SEED_FROM:
        # Docker fills an empty named volume from the image's content at the
        # mount point when the container is created. Mounting the site's
        # volume over the image's WordPress sources too lets the engine copy
        # WordPress in; the entrypoint then finds it in place and skips its
        # own copy. The engine's copy is charged to the engine, not the site:
        # an idle site holds 12.6 MB instead of 22.3 MB (the entrypoint's copy
        # leaves ~10 MB of inode and dentry slab in the site's cgroup), for
        # about 0.3 s more per site (docs/performance.md).
        mounts.append(Mount(target=settings.WPFLEET_PHP_SEED_FROM, source=volume, type="volume"))
    return mounts


class PhpStep:
    name = "php"
    needs = ("volume", "network")

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        docker = ctx.infra.docker
        container, created = docker.ensure_container(
            n.php,
            n.labels("php"),
            image=settings.WPFLEET_PHP_IMAGE,
            environment={
                "WORDPRESS_DB_HOST": settings.WPFLEET_SITE_DB_HOST,
                "WORDPRESS_DB_USER": n.db_user,
                "WORDPRESS_DB_PASSWORD_FILE": DB_PASSWORD_FILE,
                "WORDPRESS_DB_NAME": n.database,
            },
            mounts=php_mounts(n.volume),
            network=n.network,
            hostname=n.php,
            # The entrypoint copies WordPress in as root and hands the files to
            # www-data; php-fpm then drops to www-data, and its master (root)
            # signals those children: KILL, or ondemand never reaps idle ones.
            cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"],
            **_limits(settings.WPFLEET_PHP_LIMITS),
        )
        if created or container.status != "running":
            # The official image reads php-fpm.d/*.conf and php/conf.d/*.ini:
            # files sorting last override its own.
            docker.put_files(container, "/usr/local/etc", {
                "php-fpm.d/zz-wpfleet.conf": (php_pool_config().encode(), 0o644, 0, 0),
                "php/conf.d/zz-wpfleet.ini": (php_ini().encode(), 0o644, 0, 0),
            })
            docker.put_files(container, "/run", {
                DB_PASSWORD_FILE.removeprefix("/run/"): (ctx.db_password.encode(), 0o400, WWW_DATA, WWW_DATA),
            })
        docker.start(container)

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.docker.remove_container(ctx.names.php, ctx.names.labels("php")))


class NginxStep:
    name = "nginx"
    needs = ("volume", "network")

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        docker = ctx.infra.docker
        container, _ = docker.ensure_container(
            n.nginx,
            n.labels("nginx"),
            image=settings.WPFLEET_NGINX_IMAGE,
            # The official image's entrypoint sets worker_processes from the
            # CPU limit: one worker at 0.5 CPU.
            environment={"NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE": "1"},
            volumes={n.volume: {"bind": "/var/www/html", "mode": "ro"}},
            network=n.network,
            hostname=n.nginx,
            cap_add=["CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID", "NET_BIND_SERVICE"],
            **_limits(settings.WPFLEET_NGINX_LIMITS),
        )
        # Only nginx faces Caddy; PHP-FPM stays on the site's own network.
        docker.connect(settings.WPFLEET_BACKEND_NETWORK, container)

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.docker.remove_container(ctx.names.nginx, ctx.names.labels("nginx")))


def nginx_server_block(names: SiteNames) -> str:
    return f"""server {{
    listen 80;
    root /var/www/html;
    index index.php;

    location / {{
        try_files $uri $uri/ /index.php?$args;
    }}

    location ~ \\.php$ {{
        fastcgi_pass {names.php}:9000;
        fastcgi_index index.php;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_param HTTPS on;
        fastcgi_param HTTP_HOST {names.domain};
    }}
}}
"""


class NginxConfigStep:
    """Write the server block as a tar stream, then have nginx load it.

    A first start loads it directly (no reload needed); a running nginx (a
    resumed job, a repair) is reloaded. Either way `nginx -t` must pass,
    because `nginx -s reload` exits 0 even when it rejects the config.
    """

    reversible = False  # the server block goes with the container
    name = "nginx_config"
    needs = ("nginx", "php")

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        docker = ctx.infra.docker
        container = docker.container(n.nginx)
        if container is None:
            raise InfraError("nginx", f"container {n.nginx} is missing")
        directory, filename = n.nginx_config.rsplit("/", 1)
        docker.put_files(container, directory, {filename: (nginx_server_block(n).encode(), 0o644, 0, 0)})
        was_running = container.status == "running"
        if not was_running:
            docker.start(container)
        code, output = docker.exec(container, ["nginx", "-t"])
        if code != 0:
            raise InfraError("nginx", f"config rejected: {output.splitlines()[-1] if output else code}")
        if was_running:
            code, output = docker.exec(container, ["nginx", "-s", "reload"])
            if code != 0:
                raise InfraError("nginx", f"reload failed: {output[-300:]}")

    def undo(self, ctx: Context) -> None:
        """Removed with the container."""


class CaddySnippetStep:
    name = "caddy_snippet"
    needs = ("nginx",)

    def apply(self, ctx: Context) -> None:
        content = snippet_for(ctx.names)
        caddy = ctx.infra.caddy
        # Staging and installing overwrite: a file of that name that someone
        # else wrote must never be replaced.
        caddy.check_not_foreign(ctx.site)
        caddy.stage(ctx.site, content)
        caddy.install(ctx.site)
        ctx.snippet_written_at = time.time()

    def undo(self, ctx: Context) -> None:
        caddy = ctx.infra.caddy
        removed, note = caddy.remove(ctx.site)
        ctx.note(note)
        if removed:
            caddy.reload_covering(time.time())


class CaddyReloadStep:
    reversible = False
    name = "caddy_reload"
    needs = ("caddy_snippet",)

    def apply(self, ctx: Context) -> None:
        ctx.infra.caddy.reload_covering(ctx.snippet_written_at or time.time())

    def undo(self, ctx: Context) -> None:
        """The snippet's undo reloads."""


class LiveCheckStep:
    """Live means verified: WordPress answers through Caddy for the site's hostname."""

    reversible = False
    name = "live_check"
    needs = ("database", "nginx_config", "caddy_reload")
    path = "/wp-admin/install.php"

    def apply(self, ctx: Context) -> None:
        deadline = time.monotonic() + settings.WPFLEET_LIVE_TIMEOUT_SECONDS
        last = "no answer"
        session = requests.Session()
        delay = 0.05
        while True:
            try:
                response = session.get(
                    settings.WPFLEET_CADDY_URL + self.path,
                    headers={"Host": ctx.names.domain},
                    allow_redirects=False,
                    timeout=5,
                )
                if response.status_code == 200 and "WordPress" in response.text:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = exc.__class__.__name__
            if time.monotonic() >= deadline:
                raise InfraError(
                    "site",
                    f"{ctx.names.domain} did not answer through Caddy within "
                    f"{settings.WPFLEET_LIVE_TIMEOUT_SECONDS:g}s (last: {last})",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def undo(self, ctx: Context) -> None:
        """Nothing to undo."""


PROVISION_STEPS: tuple[Step, ...] = (
    DatabaseStep(),
    VolumeStep(),
    NetworkStep(),
    PhpStep(),
    NginxStep(),
    NginxConfigStep(),
    CaddySnippetStep(),
    CaddyReloadStep(),
    LiveCheckStep(),
)
STEP_NAMES = tuple(step.name for step in PROVISION_STEPS)


class StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException, undo_errors: list[str]):
        self.step = step
        self.cause = cause
        self.undo_errors = undo_errors
        message = f"step {step} failed: {cause}"
        if undo_errors:
            message += " | rollback incomplete: " + "; ".join(undo_errors)
        super().__init__(message)


class InjectedFault(Exception):
    """Raised after a step's apply when WPFLEET_FAULTS names it (tests, drills).

    ``php`` fails every attempt after the php step; ``php@1`` only the first.
    """


# Called as recorder(step_name, phase, outcome, error) at the start and end of
# each apply and undo, so a job shows its progress step by step.
Recorder = Callable[..., object]


def _noop_recorder(*args: object, **kwargs: object) -> None:
    return None


class Provisioner:
    def __init__(
        self, site: str, db_password: str, recorder: Recorder = _noop_recorder, infra: Infra | None = None,
        attempt: int = 1,
    ):
        self.ctx = Context(site=site, db_password=db_password, infra=infra or Infra())
        self.record = recorder
        self.attempt = attempt

    def _fault_after(self, step: str) -> bool:
        faults = getattr(settings, "WPFLEET_FAULTS", ())
        return step in faults or f"{step}@{self.attempt}" in faults

    def _apply(self, step: Step) -> None:
        step.apply(self.ctx)
        if self._fault_after(step.name):
            raise InjectedFault(f"injected fault after {step.name}")

    def provision(self) -> None:
        """Apply every step once the steps it needs are done; independent steps run side by side.

        On a failure no new step starts; the running ones finish, then every
        step that started (the failed one too) is undone in reverse order.
        Only this thread records steps, so the step threads never touch the
        control database.
        """
        steps = PROVISION_STEPS
        needs = {}
        for index, step in enumerate(steps):
            declared = getattr(step, "needs", None)
            needs[step.name] = set(s.name for s in steps[:index]) if declared is None else set(declared)
        done: set[str] = set()
        started: list[Step] = []
        pending = list(steps)
        failure: tuple[Step, BaseException] | None = None
        threads = settings.WPFLEET_STEP_THREADS
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"provision-{self.ctx.site}") as pool:
            running: dict[Future, tuple[Step, object]] = {}
            while True:
                if failure is None:
                    for step in [s for s in pending if needs[s.name] <= done]:
                        pending.remove(step)
                        started.append(step)
                        handle = self.record(step.name, "apply", "RUNNING", "")
                        running[pool.submit(self._apply, step)] = (step, handle)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    step, handle = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(step.name)
                        self.record(step.name, "apply", "OK", "", handle=handle)
                    else:
                        self.record(step.name, "apply", "FAILED", str(error), handle=handle)
                        failure = failure or (step, error)
        if failure is None and pending:
            raise RuntimeError(f"steps never became ready: {[s.name for s in pending]}")
        if failure is not None:
            step, error = failure
            undo_errors = self.undo([s for s in steps if s in started])
            raise StepFailed(step.name, error, undo_errors) from error

    def deprovision(self) -> None:
        """Undo every step in reverse; fails if anything could not be removed."""
        undo_errors = self.undo(PROVISION_STEPS)
        if undo_errors:
            raise InfraError("rollback", "; ".join(undo_errors))

    def undo(self, steps: tuple[Step, ...] | list[Step]) -> list[str]:
        errors: list[str] = []
        for step in reversed(steps):
            if not getattr(step, "reversible", True):
                continue
            handle = self.record(step.name, "undo", "RUNNING", "")
            before = len(self.ctx.notes)
            try:
                step.undo(self.ctx)
            except Exception as exc:
                errors.append(f"{step.name}: {exc}")
                self.record(step.name, "undo", "UNDO_FAILED", str(exc), handle=handle)
                continue
            self.record(step.name, "undo", "UNDONE", "; ".join(self.ctx.notes[before:]), handle=handle)
        return errors
