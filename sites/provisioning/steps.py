"""What a site is made of: one step per resource, each owning it end to end.

Every step has
- ``apply``: build it (idempotent: found again by its deterministic name and
  owner mark, so a step can run again after a crash);
- ``undo``: remove it, only if it is ours (idempotent, whether or not apply
  ever finished);
- ``observe``: what exists now, by name, whoever owns it, as ``Resource``
  rows: present and ours, missing, stopped, drifted, or foreign.

Provisioning and rollback (sites.provisioning.orchestrator), the reconciler
and cleanup (sites.ops), the admin's resources panel and the tests'
``leftovers()`` all iterate over ``PROVISION_STEPS``: this file is the one
description of a site.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from docker.types import Mount

from hosting.env import Limits
from sites.infra.caddy import UPSTREAM_SUFFIX, Caddy, upstream_alias
from sites.infra.docker_host import DockerHost
from sites.infra.errors import ForeignResource, InfraError, VolumeHeldByEngine
from sites.infra.mariadb import MariaDBAdmin, owner_comment
from sites.infra.restic import BackupRepository
from sites.models.naming import SiteNames
from sites.models.php import PHP_DEFAULTS
from sites.provisioning.restore import Restorer, Source
from sites.provisioning.shards import backend_network
from sites.provisioning.templates import (
    FPM_PORTS,
    PAGE_CACHE_DIR,
    PAGE_CACHE_DIR_MODE,
    PAGE_CACHE_HOSTS,
    PAGE_CACHE_MOUNT,
    PLUGINS,
    nginx_server_block,
    php_ini,
    php_pool_config,
)

if TYPE_CHECKING:
    from sites.infra.quota import DiskQuotas

# Where the PHP container finds its database password: a file, not an
# environment variable, so `docker inspect` does not show it.
DB_PASSWORD_FILE = "/run/secrets/wordpress_db_password"
WWW_DATA = 33  # uid/gid of www-data in the official images and Debian's


class UnknownPhpVersion(InfraError):
    permanent = True

    def __init__(self, version: str):
        super().__init__("php", f"PHP {version} is not offered (WPFLEET_PHP_VERSIONS)")


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

    @cached_property
    def repository(self) -> BackupRepository:
        return BackupRepository()

    @cached_property
    def quotas(self) -> DiskQuotas | None:
        """The sites' disk quotas; None when WPFLEET_QUOTA_ROOT is empty (no quotas on this host)."""
        from sites.infra.quota import DiskQuotas

        return DiskQuotas(settings.WPFLEET_QUOTA_ROOT) if settings.WPFLEET_QUOTA_ROOT else None


@dataclass(frozen=True)
class WordPressProfile:
    """What WordPress is installed with (the admin's password is WordPress's own secret)."""

    title: str
    admin_user: str
    admin_email: str


@dataclass
class Context:
    site: str
    db_password: str
    infra: Infra
    # None where nothing is built (deprovision, cleanup): the install step refuses then.
    profile: WordPressProfile | None = None
    # Every hostname the site answers to, its own first (empty: its own
    # only), and the one WordPress calls home (empty: its own).
    hostnames: tuple[str, ...] = ()
    home: str = ""
    # A clone: the backup whose database and files the site gets instead of
    # a fresh WordPress (sites.provisioning.restore).
    restore: Source | None = None
    # nginx's page cache (sites.provisioning.templates), on unless the site turned it off.
    page_cache: bool = True
    # PHP: the version (a key of WPFLEET_PHP_VERSIONS; empty: the default) and
    # every php.ini value the site runs with (sites.models.php).
    php_version: str = ""
    php_values: dict[str, str | int] = field(default_factory=lambda: dict(PHP_DEFAULTS))
    # Bytes the site's files may take (sites.infra.quota), when this host has quotas.
    disk_quota: int = field(default_factory=lambda: settings.WPFLEET_DISK_QUOTA)
    # The backend shard on which Caddy reaches the site's nginx
    # (sites.provisioning.shards); empty: read from the site's row when needed.
    backend_network: str = ""
    # Fingerprints of what the site's nginx was last given (Site.applied);
    # None: not known here (read from the row when one is recorded).
    applied: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    @cached_property
    def names(self) -> SiteNames:
        return SiteNames(self.site)

    @property
    def served(self) -> tuple[str, ...]:
        return self.hostnames or (self.names.domain,)

    @property
    def home_host(self) -> str:
        return self.home or self.names.domain

    @property
    def php_image(self) -> str:
        version = self.php_version or settings.WPFLEET_PHP_DEFAULT_VERSION
        image = settings.WPFLEET_PHP_VERSIONS.get(version)
        if image is None:
            raise UnknownPhpVersion(version)
        return image

    def note(self, message: str | None) -> None:
        if message:
            self.notes.append(message)

    def recorded_backend(self) -> str:
        """The site's backend shard as recorded (WPFLEET_BACKEND_NETWORK when none is: sites made before shards)."""
        if not self.backend_network:
            from sites.models import Site

            row = Site.objects.filter(name=self.site).values_list("backend_network", flat=True).first()
            self.backend_network = row or ""
        return self.backend_network or settings.WPFLEET_BACKEND_NETWORK

    def record_applied(self, step: str, fingerprint: str) -> None:
        """Remember what a step gave the site's nginx (Site.applied), for the reconciler's bulk pass."""
        from sites.models import Site

        row = Site.objects.filter(name=self.site).values_list("applied", flat=True).first()
        applied = dict(row or {})
        applied[step] = fingerprint
        Site.objects.filter(name=self.site).update(applied=applied)
        self.applied = applied


def fingerprint(*parts: object) -> str:
    """A short digest of what was applied: equal digests, equal configuration."""
    return hashlib.sha256("\0".join(str(part) for part in parts).encode()).hexdigest()[:16]


# --- observing -------------------------------------------------------------------------

OK, MISSING, STOPPED, DRIFTED, FOREIGN = "ok", "missing", "stopped", "drifted", "foreign"


@dataclass(frozen=True)
class Resource:
    kind: str
    name: str
    state: str  # ok | missing | stopped | drifted | foreign
    detail: str = ""

    @property
    def exists(self) -> bool:
        return self.state != MISSING

    @property
    def needs_repair(self) -> bool:
        """Ours and not as it should be (a foreign one is never repaired)."""
        return self.state in (MISSING, STOPPED, DRIFTED)

    def __str__(self) -> str:
        text = f"{self.kind} {self.name}"
        return text if self.state == OK else f"{text} {self.detail or self.state}"


def _labelled_ours(labels: dict | None, names: SiteNames) -> bool:
    labels = labels or {}
    return labels.get("wpfleet.owner") == settings.WPFLEET_OWNER and labels.get("wpfleet.site") == names.site


class View:
    """What exists now, asked through the adapters.

    ``bulk=True`` reads each listing once (containers, volumes, networks,
    databases, accounts, routes of this owner) for a pass over many sites:
    the reconciler's cost then does not grow with one Docker call per site
    per resource. A name missing from a bulk listing is either absent or not
    ours; repairing it (apply) tells which, and never touches a foreign one.
    """

    def __init__(self, infra: Infra, bulk: bool = False, deep: frozenset[str] = frozenset()):
        self.infra = infra
        self.bulk = bulk
        # Sites a bulk pass checks for real this time (their nginx inspected,
        # its server block read), whatever their recorded fingerprints say.
        self.deep = deep
        if bulk:
            docker = infra.docker
            self._containers = {c.name: c for c in docker.list_owned("container")}
            self._volumes = {v.name: v for v in docker.list_owned("volume")}
            self._networks = {n.name: n for n in docker.list_owned("network")}
            self._databases = infra.db.site_databases()
            self._users = infra.db.users_at(settings.WPFLEET_DB_USER_HOST)
            self._routes = infra.caddy.routes()
            self._suspended = infra.caddy.suspensions()

    def container(self, name: str):
        return self._containers.get(name) if self.bulk else self.infra.docker.container(name)

    def networks(self) -> dict:
        """{name: network} of this owner's networks, as listed (a bulk view only)."""
        return dict(self._networks) if self.bulk else {}

    def trusts_fingerprints(self, site: str) -> bool:
        """Whether the recorded fingerprints stand for what the site's nginx has (a bulk pass, not a deep check)."""
        return self.bulk and site not in self.deep

    def inspected(self, name: str):
        """The container inspected (a listing does not show its aliases)."""
        return self.infra.docker.container(name)

    def volumes(self) -> list:
        """This owner's volumes, as listed (a bulk view only)."""
        return list(self._volumes.values()) if self.bulk else []

    def volume_labels(self, name: str) -> dict | None:
        volume = self._volumes.get(name) if self.bulk else self.infra.docker.volume(name)
        return None if volume is None else (volume.attrs.get("Labels") or {})

    def network_labels(self, name: str) -> dict | None:
        network = self._networks.get(name) if self.bulk else self.infra.docker.network(name)
        return None if network is None else (network.attrs.get("Labels") or {})

    def database_comment(self, database: str, site: str) -> str | None:
        if self.bulk:
            return owner_comment(site) if self._databases.get(database) == site else None
        return self.infra.db.database_comment(database)

    def user_exists(self, user: str, host: str) -> bool:
        return user in self._users if self.bulk else self.infra.db.user_exists(user, host)

    def user_is_ours(self, user: str, host: str, site: str) -> bool:
        return self.infra.db.user_owner(user, host) == (settings.WPFLEET_OWNER, site)

    def installed_databases(self) -> set[str]:
        if not hasattr(self, "_installed"):
            self._installed = self.infra.db.installed_databases()
        return self._installed

    def suspended_by(self, host: str) -> str | None:
        """The site whose suspended page answers ``host`` (None: none of ours)."""
        if self.bulk:
            return self._suspended.get(host)
        return self.infra.caddy.suspensions().get(host)

    def route_owner(self, host: str) -> str | None:
        """The site a route file names as its own: "" for a file that is not ours, None for no file."""
        if self.bulk:
            # Listed by our marker: a foreign file is not in the listing (apply finds it).
            return self._routes.get(host)
        return self.infra.caddy.route_owner(host)


class Step(Protocol):
    name: str
    # Names of the steps that must be done first.
    needs: tuple[str, ...]
    # False: undo has nothing of its own to remove (another step's undo does).
    reversible: bool

    def apply(self, ctx: Context) -> None: ...

    def undo(self, ctx: Context) -> None: ...

    def observe(self, ctx: Context, view: View) -> list[Resource]: ...


# --- the steps, in the seed's order ----------------------------------------------


class DatabaseStep:
    name = "database"
    needs: tuple[str, ...] = ()
    reversible = True

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        ctx.infra.db.ensure_site_database(
            ctx.site,
            n.database,
            n.db_user,
            settings.WPFLEET_DB_USER_HOST,
            ctx.db_password,
            settings.WPFLEET_DB_MAX_USER_CONNECTIONS,
            settings.WPFLEET_DB_MAX_STATEMENT_SECONDS,
        )
        # The account at a host pattern the setting no longer names (sites
        # once connected from their own networks, now from their nginx's
        # address on a shard): only the current one is of use.
        self._drop_former_accounts(ctx)

    @staticmethod
    def _drop_former_accounts(ctx: Context) -> None:
        n = ctx.names
        for host in ctx.infra.db.user_hosts(n.db_user):
            if host != settings.WPFLEET_DB_USER_HOST:
                ctx.note(ctx.infra.db.drop_site_user(ctx.site, n.db_user, host))

    def undo(self, ctx: Context) -> None:
        n = ctx.names
        ctx.note(ctx.infra.db.drop_site_database(ctx.site, n.database, n.db_user, settings.WPFLEET_DB_USER_HOST))
        self._drop_former_accounts(ctx)
        # A restore's copies beside the live database (sites.provisioning.restore).
        for extra in (f"{n.database}_restore", f"{n.database}_old"):
            ctx.note(ctx.infra.db.drop_database(ctx.site, extra))

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        n, host = ctx.names, settings.WPFLEET_DB_USER_HOST
        comment = view.database_comment(n.database, ctx.site)
        if comment is None:
            database = Resource("database", n.database, MISSING)
        elif comment == owner_comment(ctx.site):
            database = Resource("database", n.database, OK)
        else:
            database = Resource("database", n.database, FOREIGN, "exists, not wpfleet's")
        account = f"{n.db_user}@{host}"
        if not view.user_exists(n.db_user, host):
            user = Resource("database user", account, MISSING)
        elif view.bulk or view.user_is_ours(n.db_user, host, ctx.site):
            user = Resource("database user", account, OK)
        else:
            user = Resource("database user", account, FOREIGN, "exists, not wpfleet's")
        return [database, user]


# With disk quotas (sites.infra.quota), a site's quota directory holds every
# place its containers write on disk, all counted against its limit:
#   files/  the webroot (the volume wp_<name>, bound here),
#   cache/  nginx's page cache (wpcache_<name>; the site's PHP may write there too),
#   tmp/    the PHP container's /tmp: uploads in progress, opcache's files;
#           with opcache's file cache, the upper layer of an overlay
#           (wptmp_<name>) over the image's compiled WordPress (compiled_core),
#   work/   that overlay's work directory (the kernel's; in no container).
# The tenant (www-data) cannot write the directory itself, so none of these
# can become a symlink somewhere else.
QUOTA_DIRS = {"files": 0o755, "cache": 0o755, "tmp": 0o1777, "work": 0o700}


def quota_dir(ctx: Context, part: str) -> str | None:
    """The site's directory ``part`` on the quota filesystem; None on a host without quotas."""
    quotas = ctx.infra.quotas
    return None if quotas is None else f"{quotas.path(ctx.site)}/{part}"


def site_template(ctx: Context) -> str | None:
    """The quota filesystem's template for a new site on the PHP image's WordPress (made on first use).

    A new site's directory is a snapshot of it: WordPress is in files/ at
    once (copy on write), so the engine has nothing to seed when the PHP
    container is made (about 1.5 s of copying 70 MB otherwise). One template
    per image id: a new image (another WordPress) gets its own. (Templates
    named ``wordpress-*``, made before compiled_core, also held compiled
    WordPress in tmp/; nothing uses them now.)
    """
    quotas, docker, source = ctx.infra.quotas, ctx.infra.docker, settings.WPFLEET_PHP_SEED_FROM
    if quotas is None or not source:
        return None
    image = ctx.php_image

    def fill(directory: str) -> None:
        for part, mode in QUOTA_DIRS.items():
            os.mkdir(f"{directory}/{part}", mode)
            os.chmod(f"{directory}/{part}", mode)
        files = f"{directory}/files"
        # The image's directory arrives as "<its name>/...": its content goes into files/, owners kept.
        with tarfile.open(
            fileobj=_Chunks(docker.image_files(image, source, ctx.names.labels("template"))), mode="r|"
        ) as tar:
            top = ""
            for member in tar:
                if not top:
                    top = member.name.split("/", 1)[0]
                if member.name == top:
                    os.chown(files, member.uid, member.gid)
                    os.chmod(files, member.mode & 0o7777)
                    continue
                member.name = member.name.removeprefix(top + "/")
                tar.extract(member, files, set_attrs=True, numeric_owner=True, filter="fully_trusted")

    return quotas.template("site-" + docker.image_id(image)[:16], fill)


def compiled_core(ctx: Context, template: str | None) -> str | None:
    """WordPress of the site template ``template`` compiled by opcache, once per image: a directory (made on first use).

    It is the read-only lower layer of every such site's /tmp (the volume
    wptmp_<name>, an overlay whose upper layer is the site's tmp/): the
    sites read one copy of the compiled core, so the kernel caches its pages
    once, not once per site (about 14 MB a site that has served a page).
    What a site compiles or changes goes to its own tmp/, on its quota; it
    cannot change this layer. php-fpm and the CLI share it: one system id.
    None without opcache's file cache or without a template.
    """
    quotas, docker = ctx.infra.quotas, ctx.infra.docker
    if quotas is None or template is None or settings.WPFLEET_PHP_OPCACHE != "file":
        return None
    image = ctx.php_image

    def fill(directory: str) -> None:
        os.chmod(directory, 0o1777)  # opcache writes as www-data while it compiles
        code, output = docker.run_once(
            image,
            ["php", *(f"-d{option}" for option in OPCACHE_FILE_OPTIONS), "-r", PRECOMPILE_PHP],
            labels=ctx.names.labels("template"),
            user="www-data",
            binds={f"{template}/files": "/var/www/html", directory: "/tmp"},
        )
        if code != 0:
            raise InfraError("php", f"precompiling WordPress for the sites' shared layer failed: {output[-300:]}")
        os.chmod(directory, 0o755)

    return quotas.template("opcache-" + docker.image_id(image)[:16], fill)


def shares_compiled_core(ctx: Context) -> bool:
    """Whether the site's /tmp is the overlay wptmp_<name> (compiled_core): the settings say, nothing is asked."""
    return (
        ctx.infra.quotas is not None and bool(settings.WPFLEET_PHP_SEED_FROM) and settings.WPFLEET_PHP_OPCACHE == "file"
    )


def php_tmp(ctx: Context) -> Mount | None:
    """The PHP container's /tmp: the overlay wptmp_<name> where it exists, else the site's tmp/ (none without quotas).

    A site made before the overlay has no such volume until its volume step
    runs again (the reconciler's repair); its tmp/ holds its own copy of the
    compiled core meanwhile, as it did.
    """
    n = ctx.names
    if ctx.infra.quotas is None:
        return None
    if shares_compiled_core(ctx) and ctx.infra.docker.volume(n.tmp_volume) is not None:
        return Mount(target="/tmp", source=n.tmp_volume, type="volume")
    return Mount(target="/tmp", source=quota_dir(ctx, "tmp"), type="bind")


OPCACHE_FILE_OPTIONS = ("opcache.enable_cli=1", "opcache.file_cache=/tmp", "opcache.file_cache_only=1")
# Compiles every PHP file of WordPress itself (not wp-content) into the file
# cache. wp-admin/includes/noop.php is left out: it declares stand-ins of
# core functions for the script loader, and opcache would refuse the real
# ones after it (compiling shares one function table).
PRECOMPILE_PHP = r"""
$files = new RecursiveIteratorIterator(new RecursiveDirectoryIterator('/var/www/html', FilesystemIterator::SKIP_DOTS));
$compiled = 0;
foreach ($files as $file) {
    $path = (string) $file;
    if (substr($path, -4) === '.php' && strpos($path, '/wp-content/') === false
        && substr($path, -9) !== '/noop.php' && @opcache_compile_file($path)) {
        $compiled++;
    }
}
fwrite(STDOUT, "compiled $compiled
");
"""


class _Chunks(io.RawIOBase):
    """A file object over an iterator of bytes (the engine's tar stream), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        size = min(len(target), len(self._buffer))
        target[:size], self._buffer = self._buffer[:size], self._buffer[size:]
        return size


def _bind(device: str) -> dict[str, str]:
    return {"type": "none", "o": "bind", "device": device}


def _overlay(lower: str, upper: str, work: str) -> dict[str, str]:
    # (settings refuse a WPFLEET_QUOTA_ROOT with ",", ":" or "=": the kernel would split the options there)
    return {"type": "overlay", "device": "overlay", "o": f"lowerdir={lower},upperdir={upper},workdir={work}"}


class VolumeStep:
    """The site's files, and its page cache (a volume of its own: never backed up, never counted as the site's files).

    On a host with disk quotas both live in the site's quota directory, with
    the PHP container's /tmp (QUOTA_DIRS): a site cannot write past its quota.
    """

    name = "volume"
    needs: tuple[str, ...] = ()
    reversible = True

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        quotas = ctx.infra.quotas
        files = cache = tmp = None
        if quotas is not None:
            template = site_template(ctx)
            base = quotas.ensure(ctx.site, ctx.disk_quota, template=template)
            for part, mode in QUOTA_DIRS.items():
                path = f"{base}/{part}"
                os.makedirs(path, exist_ok=True)
                # (an existing directory keeps its owner: Docker's seeding hands files/ to www-data)
                os.chmod(path, mode)
            files, cache = _bind(f"{base}/files"), _bind(f"{base}/cache")
            core = compiled_core(ctx, template) if shares_compiled_core(ctx) else None
            if core is not None:
                tmp = _overlay(core, f"{base}/tmp", f"{base}/work")
        ctx.infra.docker.ensure_volume(n.volume, n.labels("volume"), driver_opts=files)
        ctx.infra.docker.ensure_volume(n.cache_volume, n.labels("cache"), driver_opts=cache)
        if tmp is not None:
            ctx.infra.docker.ensure_volume(n.tmp_volume, n.labels("tmp"), driver_opts=tmp)

    def undo(self, ctx: Context) -> None:
        n = ctx.names
        quotas = ctx.infra.quotas
        for volume, role in ((n.tmp_volume, "tmp"), (n.cache_volume, "cache"), (n.volume, "volume")):
            try:
                ctx.note(ctx.infra.docker.remove_volume(volume, n.labels(role)))
            except VolumeHeldByEngine as exc:
                # Only a volume with driver options is counted, here a bind
                # of the quota directory: its data goes with the directory
                # below, and what the engine keeps is a name bound to a path
                # that no longer exists, removed by the reconciler once the
                # engine lets it (sites.ops.cleanup.remove_emptied_volumes).
                if quotas is None:
                    raise
                ctx.note(f"{exc}; its data is deleted with the quota directory")
        if quotas is not None:
            ctx.note(quotas.remove(ctx.site))

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        n = ctx.names
        found = [
            _labelled("volume", n.volume, view.volume_labels(n.volume), n),
            _labelled("page cache volume", n.cache_volume, view.volume_labels(n.cache_volume), n),
        ]
        if shares_compiled_core(ctx):
            found.append(_labelled("PHP /tmp volume", n.tmp_volume, view.volume_labels(n.tmp_volume), n))
        quotas = ctx.infra.quotas
        if quotas is not None:
            owned = quotas.owned(ctx.site)
            path = quotas.path(ctx.site)
            if owned is None:
                found.append(Resource("quota directory", path, MISSING))
            elif owned is False:
                found.append(Resource("quota directory", path, FOREIGN, "exists, not wpfleet's"))
            else:
                found.append(Resource("quota directory", path, OK))
        return found


def _labelled(kind: str, name: str, labels: dict | None, names: SiteNames) -> Resource:
    if labels is None:
        return Resource(kind, name, MISSING)
    if not _labelled_ours(labels, names):
        return Resource(kind, name, FOREIGN, "exists, not wpfleet's")
    return Resource(kind, name, OK)


def _container_state(kind: str, name: str, view: View, names: SiteNames) -> Resource:
    container = view.container(name)
    if container is None:
        return Resource(kind, name, MISSING)
    if not _labelled_ours(container.labels, names):
        return Resource(kind, name, FOREIGN, f"{container.status}, not wpfleet's")
    if container.status != "running":
        return Resource(kind, name, STOPPED, container.status)
    return Resource(kind, name, OK, "running")


def _limits(limits: Limits) -> dict[str, Any]:
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


def php_environment(names: SiteNames) -> dict[str, str]:
    """The PHP container's environment: where its database is, never the password (a file)."""
    return {
        "WORDPRESS_DB_HOST": settings.WPFLEET_SITE_DB_HOST,
        "WORDPRESS_DB_USER": names.db_user,
        "WORDPRESS_DB_PASSWORD_FILE": DB_PASSWORD_FILE,
        "WORDPRESS_DB_NAME": names.database,
    }


def php_mounts(names: SiteNames, tmp: Mount | None = None) -> list[Mount]:
    """The PHP container's mounts; ``tmp``: its /tmp as php_tmp says (none: the image's)."""
    volume = names.volume
    mounts = [
        Mount(target="/var/www/html", source=volume, type="volume"),
        # The purge plugin deletes the pages nginx cached (sites.provisioning.templates).
        Mount(target=PAGE_CACHE_MOUNT, source=names.cache_volume, type="volume"),
    ]
    if tmp is not None:
        mounts.append(tmp)
    if settings.WPFLEET_PHP_SEED_FROM:
        # Docker fills an empty named volume from the image's content at the
        # mount point when the container is created. Mounting the site's
        # volume over the image's WordPress sources too lets the engine copy
        # WordPress in; the entrypoint then finds it in place and skips its
        # own copy. The copy is then charged to the engine, not to the site's
        # cgroup (docs/performance.md says what that does and does not save).
        mounts.append(Mount(target=settings.WPFLEET_PHP_SEED_FROM, source=volume, type="volume"))
    return mounts


# A PHP container's own writable places that are not the site's files: on
# a tmpfs each (memory, bounded), so that its writable layer on the host's
# disk is never a way around the site's disk quota. /tmp is the site's (its
# quota directory: uploads and opcache's files) when quotas are on.
PHP_TMPFS = {
    "/var/tmp": "size=16m,mode=1777",
    "/run/lock": "size=1m,mode=1777",
    "/run/php": "size=1m,mode=755",
    # Debian's: sessions can be written, not listed, by www-data.
    "/var/lib/php/sessions": "size=16m,mode=1733",
}


FPM_PORT_LABEL = "wpfleet.fpm-port"


def fpm_port(container: Any) -> int:
    """The loopback port a PHP container of the site listens on (one made before the label: the first)."""
    labels = (container.labels if container is not None else None) or {}
    try:
        port = int(labels.get(FPM_PORT_LABEL, FPM_PORTS[0]))
    except ValueError:
        return FPM_PORTS[0]
    return port if port in FPM_PORTS else FPM_PORTS[0]


def joins(php: Any, nginx: Any) -> bool:
    """Whether the PHP container was made in this nginx container's network namespace."""
    return DockerHost.network_mode(php) == f"container:{nginx.id}"


def started_before(php: Any, nginx: Any) -> bool:
    """Whether a running PHP container started before its nginx last did (inspected containers).

    Then it runs in the network namespace nginx had before: one that lost
    its address on the backend, where nginx cannot reach PHP-FPM on loopback.
    """
    php_started, nginx_started = DockerHost.started_at(php), DockerHost.started_at(nginx)
    return (
        php.status == "running"
        and php_started is not None
        and nginx_started is not None
        and (php_started < nginx_started)
    )


def php_fingerprint(php: Any, nginx: Any, backend: str) -> str:
    """The PHP container and the endpoint its nginx had on the backend when PHP was last seen in its namespace.

    nginx started again has a new endpoint (a new namespace), which the
    engine's listing shows: a bulk pass then looks which started last.
    """
    networks = (nginx.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return fingerprint(php.id, nginx.id, (networks.get(backend) or {}).get("EndpointID") or "")


def drop_legacy_network(ctx: Context) -> None:
    """Remove the site's own network of an older wpfleet, nginx first detached from it (nothing when there is none)."""
    n = ctx.names
    docker = ctx.infra.docker
    network = docker.network(n.legacy_network)
    if network is None:
        return
    if not _labelled_ours(network.attrs.get("Labels"), n):
        ctx.note(f"network {n.legacy_network} is not wpfleet's: left untouched")
        return
    try:
        attached = {c.get("Name") for c in (network.attrs.get("Containers") or {}).values()}
        if n.nginx in attached:
            docker.disconnect(n.legacy_network, n.nginx)
        ctx.note(docker.remove_network(n.legacy_network, n.labels("network")))
    except InfraError as error:
        # Unused by the site now: a leftover to report, not a reason to stop
        # the repair (the next pass tries again).
        ctx.note(f"network {n.legacy_network} not removed: {error}")


# The engine never starts a site's PHP container by itself: only wpfleet
# does, its nginx first (PhpStep.running_nginx; the reconciler within a
# minute after a crash: sites.ops.reconcile). At its own start after a
# crash (a power cut), Docker 20.10 starts containers in no order; a PHP
# container that comes before its nginx fails ("cannot join network of a
# non running container"), and that failed start leaves its volumes
# counted as mounted until the engine restarts: the site's volumes cannot
# be removed (measured: 102 of 210 sites, docs/performance.md).
PHP_RESTART_POLICY = {"Name": "no", "MaximumRetryCount": 0}


class PhpStep:
    """The site's PHP-FPM, in its nginx's network namespace.

    The site then holds one address, nginx's on its backend shard, and no
    network of its own: a network per site is what made an engine's start,
    a site's creation and the host's memory grow with the number of sites
    (docs/performance.md). PHP-FPM listens on loopback only: that address
    is beside other sites' nginx, and FastCGI from there would run any PHP
    file as the site (templates.php_pool_config). PHP's own traffic (the
    database, WordPress's updates) leaves from that address.
    """

    name = "php"
    needs: tuple[str, ...] = ("volume", "nginx")
    reversible = True

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        docker = ctx.infra.docker
        nginx = self.running_nginx(ctx, n.php)
        port = FPM_PORTS[0]
        current = docker.container(n.php)
        if current is not None and _labelled_ours(current.labels, n) and not joins(current, nginx):
            # On the site's own network (an older wpfleet's), or in the
            # namespace of an nginx since made again: made anew in this one.
            port = fpm_port(current) if DockerHost.network_mode(current).startswith("container:") else port
            ctx.note(docker.remove_container(n.php, n.labels("php")))
            current = None
        container = self.create(ctx, n.php, port if current is None else fpm_port(current), nginx=nginx)
        nginx = docker.container(n.nginx) or nginx  # as started now
        if started_before(container, nginx):
            # nginx started again since (an engine's restart, a resume): PHP
            # joins its namespace as it is now.
            docker.restart(container)
        ctx.record_applied(self.name, php_fingerprint(container, nginx, ctx.recorded_backend()))
        # The next container of a PHP switch that failed for good (no job
        # holds the site when this runs outside one): the recorded PHP serves.
        ctx.note(docker.remove_container(n.php_next, n.labels("php")))
        drop_legacy_network(ctx)

    @staticmethod
    def running_nginx(ctx: Context, php: str) -> Any:
        """The site's nginx, started if stopped (a suspended site's, for a backup; a switch's rollback after a crash).

        PHP-FPM joins its network namespace: the engine refuses a stopped
        one's, and wpfleet never puts a site's PHP in a container not its own.
        """
        n = ctx.names
        docker = ctx.infra.docker
        nginx = docker.container(n.nginx)
        if nginx is None:
            raise InfraError("php", f"container {n.nginx} is missing: {php} joins its network")
        if not _labelled_ours(nginx.labels, n):
            raise ForeignResource("docker", f"container {n.nginx} is not wpfleet's: {php} does not join its network")
        if nginx.status != "running":
            docker.start(nginx)
        return nginx

    @staticmethod
    def create(ctx: Context, name: str, port: int = FPM_PORTS[0], nginx: Any = None) -> Any:
        """The site's PHP-FPM container under ``name``, created if missing, configured and started.

        Its image and php.ini follow the context (the PHP switch makes the
        next one under another name, on the other port: sites.provisioning.php_switch).
        It joins the network namespace of the site's nginx, which must run
        (``nginx``: as ``running_nginx`` gave it; none: asked here).
        """
        n = ctx.names
        docker = ctx.infra.docker
        nginx = nginx or PhpStep.running_nginx(ctx, name)
        container, created = docker.ensure_container(
            name,
            n.labels("php"),
            extra_labels={FPM_PORT_LABEL: str(port)},
            image=ctx.php_image,
            environment=php_environment(n),
            mounts=php_mounts(n, php_tmp(ctx)),
            tmpfs=dict(PHP_TMPFS),
            # By id: the engine records it so, and a re-created nginx is another namespace.
            network_mode=f"container:{nginx.id}",
            # The entrypoint copies WordPress in as root and hands the files to
            # www-data; php-fpm then drops to www-data, and its master (root)
            # signals those children: KILL, or ondemand never reaps idle ones.
            cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"],
            **{**_limits(settings.WPFLEET_PHP_LIMITS), "restart_policy": PHP_RESTART_POLICY},
        )
        if (container.attrs.get("HostConfig") or {}).get("RestartPolicy") != PHP_RESTART_POLICY:
            # Made before PHP_RESTART_POLICY: the engine would start it on its own.
            docker.set_restart_policy(container, PHP_RESTART_POLICY)
        if created or container.status != "running":
            # The official image reads php-fpm.d/*.conf and php/conf.d/*.ini:
            # files sorting last override its own.
            docker.put_files(
                container,
                "/usr/local/etc",
                {
                    "php-fpm.d/zz-wpfleet.conf": (php_pool_config(fpm_port(container)).encode(), 0o644, 0, 0),
                    "php/conf.d/zz-wpfleet.ini": (php_ini(values=ctx.php_values).encode(), 0o644, 0, 0),
                },
            )
            docker.put_files(
                container,
                "/run",
                {
                    DB_PASSWORD_FILE.removeprefix("/run/"): (ctx.db_password.encode(), 0o400, WWW_DATA, WWW_DATA),
                },
            )
        docker.start(container)
        return container

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.docker.remove_container(ctx.names.php, ctx.names.labels("php")))
        # The next one of a PHP switch that never finished.
        ctx.note(ctx.infra.docker.remove_container(ctx.names.php_next, ctx.names.labels("php")))

    @staticmethod
    def _seen_in_namespace(ctx: Context, view: View, php: Any, nginx: Any) -> bool:
        """A bulk pass: nginx has the endpoint it had when PHP was last seen in its namespace."""
        recorded = (ctx.applied or {}).get(PhpStep.name)
        return view.trusts_fingerprints(ctx.site) and recorded == php_fingerprint(php, nginx, ctx.recorded_backend())

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        n = ctx.names
        state = _container_state("PHP-FPM container", n.php, view, n)
        found = [state]
        php, nginx = view.container(n.php), view.container(n.nginx)
        if state.state == OK and nginx is not None and _labelled_ours(nginx.labels, n):
            if not joins(php, nginx):
                found = [Resource("PHP-FPM container", n.php, DRIFTED, f"not in {n.nginx}'s network namespace")]
            elif nginx.status == "running" and not self._seen_in_namespace(ctx, view, php, nginx):
                # Which started last is only known inspected: a bulk pass asks
                # when nginx's endpoint changed since PHP was last seen in its
                # namespace, and at its deep checks.
                if view.bulk:
                    php, nginx = view.inspected(n.php), view.inspected(n.nginx)
                if php is not None and nginx is not None:
                    if started_before(php, nginx):
                        found = [Resource("PHP-FPM container", n.php, DRIFTED, f"started before {n.nginx} last did")]
                    elif view.bulk:
                        ctx.record_applied(self.name, php_fingerprint(php, nginx, ctx.recorded_backend()))
        if view.container(n.php_next) is not None:
            found.append(Resource("PHP-FPM container", n.php_next, DRIFTED, "left by a PHP switch"))
        if view.network_labels(n.legacy_network) is not None:
            found.append(Resource("network", n.legacy_network, DRIFTED, "the site's own, no longer used"))
        return found


class NginxStep:
    """The site's nginx, on its backend shard under the site's hostnames; its network namespace is also PHP's."""

    name = "nginx"
    needs: tuple[str, ...] = ("volume",)
    reversible = True

    def apply(self, ctx: Context) -> None:
        n = ctx.names
        docker = ctx.infra.docker
        # Caddy proxies a routed hostname to the upstream of that name: the
        # site's hostname is an alias of its nginx on the backend network
        # (the site's shard, chosen when first needed: sites.provisioning.shards).
        backend = backend_network(ctx)
        aliases = [upstream_alias(h) for h in ctx.served]
        container, created = docker.ensure_container(
            n.nginx,
            n.labels("nginx"),
            image=settings.WPFLEET_NGINX_IMAGE,
            # The official image's entrypoint sets worker_processes from the
            # CPU limit: one worker at 0.5 CPU.
            environment={"NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE": "1"},
            volumes={
                n.volume: {"bind": "/var/www/html", "mode": "ro"},
                n.cache_volume: {"bind": PAGE_CACHE_MOUNT, "mode": "rw"},
            },
            network=backend,
            aliases=aliases,
            hostname=n.nginx,
            cap_add=["CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID", "NET_BIND_SERVICE"],
            **_limits(settings.WPFLEET_NGINX_LIMITS),
        )
        if not created:
            # Made earlier: its aliases as the site's hostnames are now.
            docker.connect(backend, container, aliases=aliases)
        # Running before PHP-FPM joins its network namespace (until its
        # server block is written it answers nginx's own page, and no route
        # leads to it yet).
        docker.start(container)
        container.reload()  # its endpoint on the backend, as attached now
        ctx.record_applied(self.name, self.fingerprint(container, backend, aliases))
        if has_cache_volume(container):
            # The purge plugin deletes a changed page under each of the site's hostnames.
            hosts_dir, hosts_file = PAGE_CACHE_HOSTS.rsplit("/", 1)
            hosts = "".join(f"{host}\n" for host in ctx.served).encode()
            docker.put_files(container, hosts_dir, {hosts_file: (hosts, 0o644, 0, 0)})

    @staticmethod
    def fingerprint(container: Any, backend: str, aliases: list[str] | set[str]) -> str:
        """The container, its endpoint on the backend and its aliases there.

        Docker cannot change an endpoint's aliases: a container detached and
        attached again (by hand, with other aliases) has a new endpoint id,
        which the engine's listing shows, so a bulk pass sees that change too.
        """
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        endpoint = (networks.get(backend) or {}).get("EndpointID") or ""
        return fingerprint(container.id, backend, endpoint, *sorted(aliases))

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.docker.remove_container(ctx.names.nginx, ctx.names.labels("nginx")))
        # An older wpfleet's network of the site (its PHP went first: undone in reverse).
        ctx.note(ctx.infra.docker.remove_network(ctx.names.legacy_network, ctx.names.labels("network")))

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        n = ctx.names
        state = _container_state("nginx container", n.nginx, view, n)
        if state.state != OK:
            return [state]
        backend = ctx.recorded_backend()
        container = view.container(n.nginx)
        if view.trusts_fingerprints(ctx.site) and ctx.applied and ctx.applied.get(self.name):
            # A bulk pass: the listing shows the networks, not the aliases; what
            # was recorded when they were set stands for them (a deep check
            # now and then inspects for real: sites.ops.reconcile).
            if ctx.applied[self.name] == self.fingerprint(container, backend, [upstream_alias(h) for h in ctx.served]):
                return [state]
            # Changed since: inspected below, to say what changed.
        if view.bulk:
            container = view.inspected(n.nginx)
            if container is None:
                return [Resource("nginx container", n.nginx, MISSING)]
        aliases = DockerHost.aliases(container, backend)
        missing = [host for host in ctx.served if upstream_alias(host) not in aliases]
        if missing:
            return [Resource("nginx container", n.nginx, DRIFTED, f"not reachable as {', '.join(missing)} from Caddy")]
        wanted = {upstream_alias(host) for host in ctx.served}
        extra = sorted(alias for alias in aliases if alias.endswith(UPSTREAM_SUFFIX) and alias not in wanted)
        if extra:
            # Another site may be given that hostname: this nginx must not answer for it.
            return [Resource("nginx container", n.nginx, DRIFTED, f"still reachable as {', '.join(extra)}")]
        if view.bulk:
            # Checked for real and as it should be: what the next passes compare with.
            ctx.record_applied(self.name, self.fingerprint(container, backend, wanted))
        return [state]


# `nginx -s reload` only signals the master: the old workers go on serving
# with the old configuration until the master has started new ones and told
# the old ones to quit. Done means served, so wait for that: every worker
# that ran before is gone or "shutting down" (it takes no new connection and
# closes its idle ones). Only sh and /proc: no ps in the official image.
RELOAD_AND_WAIT = r"""
workers() {
    for dir in /proc/[0-9]*; do
        case "$(tr '\0' ' ' < "$dir/cmdline" 2>/dev/null)" in
            "nginx: worker process is shutting down"*) ;;
            "nginx: worker process"*) echo "${dir#/proc/}" ;;
        esac
    done
}
before=" $(workers | tr '\n' ' ') "
nginx -s reload || exit 1
tries=0
while [ $tries -lt 200 ]; do
    old=0
    for pid in $(workers); do
        case "$before" in *" $pid "*) old=1 ;; esac
    done
    [ $old -eq 0 ] && exit 0
    tries=$((tries + 1))
    sleep 0.05
done
echo "the workers from before the reload still serve after 10 s"
exit 1
"""


def has_cache_volume(container: Any) -> bool:
    """Whether a container of the site mounts its page cache volume (those made before the cache did not)."""
    return any(mount.get("Destination") == PAGE_CACHE_MOUNT for mount in container.attrs.get("Mounts") or [])


class NginxConfigStep:
    """Write the server block as a tar stream, then have nginx load it.

    A first start loads it directly (no reload needed); a running nginx (a
    resumed job, a repair) is reloaded. Either way `nginx -t` must pass,
    because `nginx -s reload` exits 0 even when it rejects the config.
    """

    name = "nginx_config"
    needs: tuple[str, ...] = ("nginx", "php")
    reversible = False  # the server block goes with the container

    def apply(self, ctx: Context, php_port: int | None = None, reload: bool = True) -> None:
        """Install the server block and have nginx serve it.

        ``php_port``: the PHP-FPM it passes to (default: the site's PHP
        container's; a PHP switch passes to its next one). ``reload=False``:
        checked with `nginx -t` but not loaded by a running nginx.
        """
        n = ctx.names
        docker = ctx.infra.docker
        container = docker.container(n.nginx)
        if container is None:
            raise InfraError("nginx", f"container {n.nginx} is missing")
        directory, filename = n.nginx_config.rsplit("/", 1)
        php = docker.container(n.php)
        cached = self._cached(ctx, container, php)
        block = self.server_block(ctx, cached, php_port or fpm_port(php))
        docker.put_files(container, directory, {filename: (block.encode(), 0o644, 0, 0)})
        if has_cache_volume(container):
            # Made before nginx sees it (nginx would make it 0700, its own only):
            # the site's PHP deletes the pages in it.
            cache_parent, cache_dir = PAGE_CACHE_DIR.rsplit("/", 1)
            docker.put_files(container, cache_parent, {cache_dir: (None, PAGE_CACHE_DIR_MODE, 0, 0)})
        was_running = container.status == "running"
        if not was_running:
            docker.start(container)
        code, output = docker.exec(container, ["nginx", "-t"])
        if code != 0:
            raise InfraError("nginx", f"config rejected: {output.splitlines()[-1] if output else code}")
        if was_running and reload:
            code, output = docker.exec(container, ["sh", "-c", RELOAD_AND_WAIT])
            if code != 0:
                raise InfraError("nginx", f"reload failed: {output[-300:]}")
        ctx.record_applied(self.name, fingerprint(container.id, block))

    @staticmethod
    def server_block(ctx: Context, cached: bool, php_port: int = FPM_PORTS[0]) -> str:
        body_max = str(ctx.php_values.get("post_max_size", PHP_DEFAULTS["post_max_size"]))
        return nginx_server_block(ctx.names, cached, body_max=body_max, php_port=php_port)

    @staticmethod
    def _cached(ctx: Context, nginx: Any, php: Any) -> bool:
        # A site whose containers were made before the page cache existed gets
        # none: its PHP could not purge it, and visitors would see stale pages.
        return ctx.page_cache and has_cache_volume(nginx) and php is not None and has_cache_volume(php)

    def undo(self, ctx: Context) -> None:
        """Removed with the container."""

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        n = ctx.names
        name = f"{n.nginx}:{n.nginx_config}"
        container = view.container(n.nginx)
        if container is None or not _labelled_ours(container.labels, n):
            return [Resource("nginx server block", name, MISSING, "no nginx container of the site")]
        php = view.container(n.php)
        wanted = self.server_block(ctx, self._cached(ctx, container, php), fpm_port(php))
        if view.trusts_fingerprints(ctx.site) and ctx.applied and ctx.applied.get(self.name):
            # A bulk pass: the block written into this container last (its id
            # is in the digest: a re-created nginx has none) against the one
            # the site should have now; no read inside each container.
            if ctx.applied[self.name] == fingerprint(container.id, wanted):
                return [Resource("nginx server block", name, OK, "installed")]
            # Changed since (another block wanted, or a new container): read below.
        content = view.infra.docker.read_file(container, n.nginx_config)
        if content is None:
            return [Resource("nginx server block", name, MISSING)]
        if content != wanted:
            # The image's stock default.conf, or an edit by hand.
            return [Resource("nginx server block", name, DRIFTED, "not the site's server block")]
        if view.bulk:
            ctx.record_applied(self.name, fingerprint(container.id, wanted))
        return [Resource("nginx server block", name, OK, "installed")]


class RouteStep:
    """Let Caddy serve the site's hostname: a route file of ours, read by Caddy at each request.

    No reload: Caddy's configuration is the same for every site (see
    sites.infra.caddy), and the file takes effect at the next request, also
    for the certificate that Caddy then gets for the name.
    """

    name = "route"
    # No route before WordPress is installed (see WordPressStep).
    needs: tuple[str, ...] = ("nginx", "wordpress")
    reversible = True

    def apply(self, ctx: Context) -> None:
        """Route exactly the site's hostnames: add the missing, remove the site's others."""
        caddy = ctx.infra.caddy
        for host in ctx.served:
            # A route file of that name that someone else wrote is never replaced.
            caddy.add_route(ctx.site, host)
            # A site served is not suspended (a resume ends here too).
            ctx.note(caddy.unsuspend(ctx.site, host))
        for host in self._routed(ctx):
            if host not in ctx.served:
                caddy.remove_route(ctx.site, host)

    def undo(self, ctx: Context) -> None:
        caddy = ctx.infra.caddy
        for host in sorted(set(ctx.served) | set(self._routed(ctx))):
            _, note = caddy.remove_route(ctx.site, host)
            ctx.note(note)
        suspended = {host for host, site in caddy.suspensions().items() if site == ctx.site}
        for host in sorted(suspended | set(ctx.served)):
            ctx.note(caddy.unsuspend(ctx.site, host))

    @staticmethod
    def _routed(ctx: Context) -> list[str]:
        """Hostnames whose route names this site (its domains' too, whatever the context knows)."""
        return sorted(host for host, site in ctx.infra.caddy.routes().items() if site == ctx.site)

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        found = []
        for host in ctx.served:
            path = ctx.infra.caddy.route_path(host)
            owner = view.route_owner(host)
            if owner is None:
                found.append(Resource("Caddy route", path, MISSING))
            elif owner != ctx.site:
                found.append(Resource("Caddy route", path, FOREIGN, "exists, not this site's"))
            elif view.suspended_by(host) == ctx.site:
                found.append(Resource("Caddy route", path, DRIFTED, f"https://{host} answers as suspended"))
            else:
                found.append(Resource("Caddy route", path, OK, f"serves https://{host}"))
        if not view.bulk:
            for host in self._routed(ctx):
                if host not in ctx.served:
                    path = ctx.infra.caddy.route_path(host)
                    found.append(Resource("Caddy route", path, DRIFTED, "routes a hostname the site no longer has"))
        return found


# Runs inside the site's PHP container as www-data, with its values in the
# environment (never in the command line). WordPress's own installer: the
# tables, the admin user with a password WordPress generates and nobody
# sees, then home and siteurl set to the site's URL. Idempotent: an
# installed site is only given its URL again.
INSTALL_PHP = r"""
function wp_mail() { return true; } // no mail server: the "new site" notice goes nowhere
define('WP_INSTALLING', true);
$_SERVER['HTTP_HOST'] = getenv('WPFLEET_HOST');
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['HTTPS'] = 'on';
require '/var/www/html/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
if (!is_blog_installed()) {
    $installed = wp_install(getenv('WPFLEET_TITLE'), getenv('WPFLEET_ADMIN_USER'), getenv('WPFLEET_ADMIN_EMAIL'), true);
    // Nobody is meant to know this password (the panel sets a new one, or logs in with a link): no nag about it.
    delete_user_meta($installed['user_id'], 'default_password_nag');
    // Pretty permalinks (nginx sends every unknown path to index.php): WordPress
    // would only turn them on after a request to itself, which cannot reach a
    // site before its route exists. Posts then have paths the page cache keeps.
    global $wp_rewrite;
    $wp_rewrite->set_permalink_structure('/%postname%/');
    update_option('rewrite_rules', '');
}
update_option('home', getenv('WPFLEET_URL'));
update_option('siteurl', getenv('WPFLEET_URL'));
wp_cache_flush();
echo is_blog_installed() ? 'WPFLEET-INSTALLED' : 'WPFLEET-NOT-INSTALLED';
"""


# Waits inside the PHP container (one exec, PID 1 checked every 20 ms, at
# most $1 seconds) until its entrypoint has become php-fpm: seen at once,
# not at the next of several execs.
READY_WAIT = r"""
tries=$(( $1 * 50 ))
while [ $tries -gt 0 ]; do
    case "$(tr '\0' ' ' </proc/1/cmdline)" in php-fpm*) exit 0 ;; esac
    tries=$((tries - 1))
    sleep 0.02
done
exit 1
"""


def wait_until_ready(docker: DockerHost, container: str, seconds: float) -> bool:
    """Whether the PHP container's entrypoint became php-fpm within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        # In turns of at most 10 s: each exec stays well inside the engine client's timeout.
        turn = max(1, min(10, int(deadline - time.monotonic() + 0.999)))
        if docker.exec(container, ["sh", "-c", READY_WAIT, "sh", str(turn)])[0] == 0:
            return True
        if time.monotonic() >= deadline:
            return False


class WordPressStep:
    """Install WordPress before any route reaches the site.

    An uninstalled WordPress makes its first visitor the administrator, able
    to run PHP in the site's container (the install hijack); so the site has
    no route in Caddy until this step has run.
    """

    name = "wordpress"
    needs: tuple[str, ...] = ("database", "php")
    reversible = True

    def apply(self, ctx: Context) -> None:
        if ctx.profile is None:
            raise InfraError("wordpress", f"no WordPress profile given for {ctx.site}")
        n = ctx.names
        docker = ctx.infra.docker
        wait = settings.WPFLEET_WORDPRESS_READY_SECONDS
        # The image's entrypoint copies WordPress in and writes wp-config.php,
        # then becomes php-fpm: only then are both complete (a file that merely
        # exists may still be half written).
        # (The entrypoint's own command line names php-fpm as its argument:
        # match the program, the start of PID 1's command line.)
        if not wait_until_ready(docker, n.php, wait):
            raise InfraError("wordpress", f"{n.php} did not finish its entrypoint within {wait:g}s")
        url = f"https://{ctx.home_host}"
        if ctx.restore is not None:
            # A clone: the backup's WordPress, its URLs rewritten to this site's.
            restorer = Restorer(ctx.site, docker, ctx.infra.db, ctx.infra.repository)
            restorer.stage(ctx.restore, url)
            restorer.switch()
            restorer.discard_old()
            restorer.discard_staging()
        code, output = docker.exec(
            n.php,
            ["php", "-r", INSTALL_PHP],
            user="www-data",
            environment={
                "WPFLEET_HOST": ctx.home_host,
                "WPFLEET_URL": url,
                "WPFLEET_TITLE": ctx.profile.title,
                "WPFLEET_ADMIN_USER": ctx.profile.admin_user,
                "WPFLEET_ADMIN_EMAIL": ctx.profile.admin_email,
            },
        )
        if code != 0 or not output.endswith("WPFLEET-INSTALLED"):
            last = output.splitlines()[-1][:300] if output else f"exit {code}"
            raise InfraError("wordpress", f"install in {n.php} failed: {last}")
        install_plugins(docker, n)

    def undo(self, ctx: Context) -> None:
        ctx.note(ctx.infra.db.clear_database(ctx.site, ctx.names.database))

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        n = ctx.names
        if view.bulk:
            installed = n.database in view.installed_databases()
            return [Resource("WordPress install", n.database, OK if installed else MISSING)]
        siteurl = view.infra.db.wordpress_siteurl(n.database)
        if siteurl is None:
            return [Resource("WordPress install", n.database, MISSING, "not installed")]
        if siteurl.rstrip("/") != f"https://{ctx.home_host}":
            return [Resource("WordPress install", n.database, DRIFTED, f"siteurl is {siteurl}")]
        # The plugin lives in the site's files: looked for only where its PHP container runs them.
        if view.container(n.php) is not None:
            changed = [path for path, content in PLUGINS.items() if view.infra.docker.read_file(n.php, path) != content]
            if changed:
                names = ", ".join(path.rsplit("/", 1)[1] for path in changed)
                return [
                    Resource("WordPress install", n.database, DRIFTED, f"wpfleet's plugin missing or changed: {names}")
                ]
        return [Resource("WordPress install", n.database, OK, f"installed, {siteurl}")]


def install_plugins(docker: DockerHost, names: SiteNames) -> None:
    """Write wpfleet's must-use plugins into the site's files: the one-click
    login (sites.ops.wordpress) and the page cache's purge.

    The directory is made by www-data, so that a site's own mu-plugins
    directory stays its own; the files are ours and rewritten as they should be.
    """
    plugin_dir = next(iter(PLUGINS)).rsplit("/", 1)[0]
    code, output = docker.exec(names.php, ["mkdir", "-p", plugin_dir], user="www-data")
    if code != 0:
        raise InfraError("wordpress", f"could not make {plugin_dir} in {names.php}: {output[-300:]}")
    container = docker.container(names.php)
    if container is None:
        raise InfraError("wordpress", f"container {names.php} is missing")
    files: dict[str, tuple[bytes | None, int, int, int]] = {
        path.rsplit("/", 1)[1]: (content.encode(), 0o644, WWW_DATA, WWW_DATA) for path, content in PLUGINS.items()
    }
    docker.put_files(container, plugin_dir, files)


def stop_site_containers(ctx: Context) -> None:
    """Stop the site's nginx, then its PHP (ours only): a suspended site holds no memory."""
    for name in (ctx.names.nginx, ctx.names.php):
        container = ctx.infra.docker.container(name)
        if container is not None and _labelled_ours(container.labels, ctx.names):
            ctx.infra.docker.stop(container)


def purge_page_cache(docker: DockerHost, names: SiteNames) -> None:
    """Delete every page nginx cached for the site (its content or its URLs changed)."""
    # (No directory: a site whose containers predate the cache has none to purge.)
    code, output = docker.exec(
        names.nginx,
        ["sh", "-c", '[ -d "$1" ] || exit 0; find "$1" -mindepth 1 -maxdepth 1 -type f -delete', "sh", PAGE_CACHE_DIR],
    )
    if code != 0:
        raise InfraError("nginx", f"could not purge the page cache of {names.site}: {output[-300:]}")


class LiveCheckStep:
    """Live means verified: the installed WordPress answers over HTTPS through Caddy.

    Caddy presents a certificate for the hostname that the configured
    authorities trust; plain HTTP answers with a permanent redirect to the
    https URL; the home page answers, the REST index names the site's title
    (the value WordPress stored, not a texturized rendering), and install.php
    offers no install form.
    """

    name = "live_check"
    needs: tuple[str, ...] = ("database", "nginx_config", "wordpress", "route")
    reversible = False

    def _verdict(self, ctx: Context) -> str | None:
        """None when the site is live; else what is still wrong."""
        caddy, host = ctx.infra.caddy, ctx.home_host
        home = caddy.get(host, "/")
        if home.status_code != 200:
            return f"home page HTTP {home.status_code}"
        index = caddy.get(host, "/?rest_route=/")
        try:
            name = index.json().get("name") if index.status_code == 200 else None
        except (ValueError, AttributeError):
            name = None
        title = ctx.profile.title if ctx.profile is not None else None
        if title is not None and name != title:
            return f"REST index HTTP {index.status_code}, name {name!r}"
        install = caddy.get(host, "/wp-admin/install.php")
        if install.status_code != 200 or "Already Installed" not in install.text or 'id="setup"' in install.text:
            return f"install.php HTTP {install.status_code} does not say it is installed"
        for other in ctx.served:
            plain = caddy.get_plain_http(other, "/wp-login.php")
            if plain.status_code != 308 or plain.headers.get("Location") != f"https://{other}/wp-login.php":
                where = plain.headers.get("Location", "")
                return f"http://{other} answers {plain.status_code} {where}, not a redirect to https"
            if other != host:
                # Every other name reaches this site's WordPress (not another's), over HTTPS.
                answer = caddy.get(other, "/?rest_route=/")
                try:
                    other_name = answer.json().get("name") if answer.status_code == 200 else None
                except (ValueError, AttributeError):
                    other_name = None
                if title is not None and other_name != title:
                    return f"https://{other}/ REST index HTTP {answer.status_code}, name {other_name!r}"
        return None

    def apply(self, ctx: Context) -> None:
        deadline = time.monotonic() + settings.WPFLEET_LIVE_TIMEOUT_SECONDS
        last = "no answer"
        delay = 0.05
        while True:
            try:
                problem = self._verdict(ctx)
                if problem is None:
                    return
                last = problem
            except InfraError as exc:
                last = exc.message
            if time.monotonic() >= deadline:
                raise InfraError(
                    "site",
                    f"https://{ctx.home_host} did not answer through Caddy within "
                    f"{settings.WPFLEET_LIVE_TIMEOUT_SECONDS:g}s (last: {last})",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def undo(self, ctx: Context) -> None:
        """Nothing to undo."""

    def observe(self, ctx: Context, view: View) -> list[Resource]:
        return []  # a check, not a resource


PROVISION_STEPS: tuple[Step, ...] = (
    DatabaseStep(),
    VolumeStep(),
    NginxStep(),
    PhpStep(),
    NginxConfigStep(),
    WordPressStep(),
    RouteStep(),
    LiveCheckStep(),
)
STEP_NAMES = tuple(step.name for step in PROVISION_STEPS)


def step_named(name: str) -> Step:
    return next(step for step in PROVISION_STEPS if step.name == name)


def observe_site(site: str, infra: Infra, view: View | None = None, db_password: str = "") -> list[Resource]:
    """Every resource of the site, step by step, as the infrastructure has it now."""
    ctx = Context(site=site, db_password=db_password, infra=infra)
    view = view or View(infra)
    return [resource for step in PROVISION_STEPS for resource in step.observe(ctx, view)]
