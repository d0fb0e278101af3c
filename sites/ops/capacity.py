"""Is there room on this host for another site? (issue 14)

A site is refused before anything is written (sites.services.create_site and
clone_site raise CapacityExhausted; the API answers 507, the admin shows the
message) when it would exhaust one of:

* ``sites``: the count of Site rows, every status (a site being deleted still
  holds its resources until its row goes), against WPFLEET_MAX_SITES;
* ``memory``: MemAvailable, minus the new site's expected footprint
  (WPFLEET_CAPACITY_SITE_MEMORY), must stay above WPFLEET_CAPACITY_MEMORY_HEADROOM;
  and every site's footprint, the new one's included, must fit in the host's
  memory less that headroom. MemAvailable alone is not enough: it counts
  the page cache as available, and the sites' own hot files are page cache
  (no two sites share theirs), so a host can thrash with gigabytes
  "available" (docs/performance.md, "A thousand real sites on one host");
* ``disk``: free space on the sites' filesystem must stay above
  WPFLEET_CAPACITY_DISK_HEADROOM;
* ``addresses``: each site takes one port on a backend shard (its PHP-FPM
  shares its nginx's network namespace: no network of its own); the shards
  hold so many, minus a reserve. And each site takes three entries of the
  kernel's IPv4 neighbour (ARP) table, which is one table for every network
  namespace: Caddy's for the site's nginx, and nginx's for Caddy and for its
  shard's gateway. Past the table's hard limit (``gc_thresh3``, 1,024 by
  default: about 320 sites) the kernel cannot resolve some addresses, and
  Caddy's connections to those sites time out (502: seen at 470 sites in
  the bench). The room is the smaller of the two;
* ``db_connections``: MariaDB's free connections (max_connections minus
  Threads_connected) must stay at WPFLEET_CAPACITY_DB_CONNECTIONS_FREE or more.

A reading that cannot be taken (MariaDB down, a path that does not exist, no
/proc/meminfo) is *unknown*: it refuses nothing, since the job would retry or
fail with its own error, and the admin's home says "unknown".

The check stays cheap: the count comes from the control database, memory
and disk from the kernel, and MariaDB answers two statements; no Docker call.
The panel runs on the Docker host (docs/deploy.md), so /proc/meminfo and the
filesystems it reads are the sites' own. The check and the insert are not one
transaction: requests racing at the very limit may each take the last slot.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from sites.infra.errors import InfraError
from sites.models import Site
from sites.provisioning.shards import shard_slots

RESOURCES = ("sites", "memory", "disk", "addresses", "db_connections")


class CapacityExhausted(Exception):
    """No room for another site: ``resource`` is the one exhausted (one of RESOURCES)."""

    def __init__(self, resource: str, detail: str):
        super().__init__(f"The host has no room for another site ({resource}): {detail}")
        self.resource = resource
        self.detail = detail


@dataclass(frozen=True)
class Reading:
    """One resource of the host: ``used`` against ``limit`` (both None when unknown), in ``unit``."""

    name: str
    used: int | None
    limit: int | None
    unit: str  # "sites", "bytes" or "connections"
    ok: bool
    detail: str

    @property
    def known(self) -> bool:
        return self.used is not None

    @property
    def used_text(self) -> str:
        if self.used is None:
            return "unknown"
        return human_bytes(self.used) if self.unit == "bytes" else f"{self.used:,}"

    @property
    def limit_text(self) -> str:
        if self.limit is None:
            return "unknown" if self.used is None else "no limit"
        return human_bytes(self.limit) if self.unit == "bytes" else f"{self.limit:,} {self.unit}"


def human_bytes(value: int) -> str:
    for factor, name in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB")):
        if abs(value) >= factor:
            return f"{value / factor:.1f} {name}"
    return f"{value / 1024:.1f} KiB"


class Probe(Protocol):
    def mem_total(self) -> int: ...
    def mem_available(self) -> int: ...
    def disk_total(self, path: str) -> int: ...
    def disk_free(self, path: str) -> int: ...
    def db_connections(self) -> tuple[int, int]: ...
    def neighbour_limit(self) -> int: ...


# Neighbour table entries a site takes (see the module's docstring), and the
# entries kept for everything else: the host's own, MariaDB's, Caddy's
# gateway, other containers.
NEIGHBOUR_ENTRIES_PER_SITE = 3
NEIGHBOUR_RESERVE = 64
GC_THRESH3 = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"


class HostProbe:
    """The real host. The panel runs on the Docker host, so its kernel's
    /proc/meminfo and its filesystems are the sites'. Each method raises
    OSError (or InfraError for MariaDB) when it cannot read."""

    def __init__(self, meminfo: str = "/proc/meminfo", gc_thresh3: str = GC_THRESH3) -> None:
        self._meminfo = meminfo
        self._gc_thresh3 = gc_thresh3

    def _meminfo_bytes(self, field: str) -> int:
        with open(self._meminfo, encoding="ascii") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key == field:
                    number, _, unit = value.strip().partition(" ")
                    return int(number) * (1024 if unit == "kB" else 1)
        raise OSError(f"{self._meminfo} has no {field}")

    def mem_total(self) -> int:
        return self._meminfo_bytes("MemTotal")

    def mem_available(self) -> int:
        """What the kernel can give without swapping: free memory plus reclaimable cache."""
        return self._meminfo_bytes("MemAvailable")

    def disk_total(self, path: str) -> int:
        stat = os.statvfs(path)
        return stat.f_blocks * stat.f_frsize

    def disk_free(self, path: str) -> int:
        """Bytes an unprivileged writer may still use (a site's containers are not root on the host)."""
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize

    def db_connections(self) -> tuple[int, int]:
        """(threads_connected, max_connections) through the panel's MariaDB account."""
        from sites.infra.mariadb import MariaDBAdmin

        return MariaDBAdmin().connection_counts()

    def neighbour_limit(self) -> int:
        """The IPv4 neighbour table's hard limit, for every network namespace together (net.ipv4.neigh.default.gc_thresh3)."""
        with open(self._gc_thresh3, encoding="ascii") as value:
            return int(value.read().strip())


def disk_path() -> str:
    """The filesystem that holds the sites' files."""
    return settings.WPFLEET_CAPACITY_DISK_PATH or settings.WPFLEET_QUOTA_ROOT or "/var/lib/docker"


def address_room() -> tuple[int, int]:
    """(room for sites, ports on the backend shards): room is the ports less the reserve kept free."""
    ports = shard_slots()
    return max(0, ports - settings.WPFLEET_CAPACITY_ADDRESS_RESERVE), ports


def _site_count() -> int:
    # Every row: a site being deleted holds its port and files until its row goes.
    return Site.objects.count()


def _unknown(name: str, unit: str, error: Exception) -> Reading:
    return Reading(name, None, None, unit, True, f"unknown: {error}")


def _sites(count: int) -> Reading:
    limit = settings.WPFLEET_MAX_SITES
    if not limit:
        return Reading(
            "sites", count, None, "sites", True, f"{count:,} sites; no limit of their own (WPFLEET_MAX_SITES=0)"
        )
    return Reading(
        "sites", count, limit, "sites", count < limit, f"{count:,} sites of at most {limit:,} (WPFLEET_MAX_SITES)"
    )


def _memory(probe: Probe, count: int) -> Reading:
    try:
        total, available = probe.mem_total(), probe.mem_available()
    except (OSError, ValueError) as error:
        return _unknown("memory", "bytes", error)
    site, headroom = settings.WPFLEET_CAPACITY_SITE_MEMORY, settings.WPFLEET_CAPACITY_MEMORY_HEADROOM
    usable = max(0, total - headroom)
    budget = count * site
    # Shown as used against usable (the host's memory minus the headroom kept
    # free): what the kernel has handed out, or the sites' budget, the larger.
    return Reading(
        "memory",
        max(total - available, budget),
        usable,
        "bytes",
        available - site >= headroom and budget + site <= usable,
        f"{human_bytes(available)} of memory available, {human_bytes(headroom)} of it to stay so "
        f"(WPFLEET_CAPACITY_MEMORY_HEADROOM); with a new site, {count + 1:,} sites at about {human_bytes(site)} "
        f"each (WPFLEET_CAPACITY_SITE_MEMORY) take {human_bytes(budget + site)} of {human_bytes(usable)}",
    )


def _disk(probe: Probe) -> Reading:
    path = disk_path()
    try:
        total, free = probe.disk_total(path), probe.disk_free(path)
    except OSError as error:
        # A missing or unreadable path is a configuration to fix, not a full disk.
        return _unknown("disk", "bytes", error)
    headroom = settings.WPFLEET_CAPACITY_DISK_HEADROOM
    return Reading(
        "disk",
        total - free,
        max(0, total - headroom),
        "bytes",
        free >= headroom,
        f"{human_bytes(free)} free on {path}; {human_bytes(headroom)} must stay free (WPFLEET_CAPACITY_DISK_HEADROOM)",
    )


def neighbour_room(limit: int) -> int:
    """Sites whose neighbour entries a table of ``limit`` entries holds, the reserve kept."""
    return max(0, (limit - NEIGHBOUR_RESERVE) // NEIGHBOUR_ENTRIES_PER_SITE)


def _addresses(probe: Probe, count: int) -> Reading:
    room, ports = address_room()
    size = settings.WPFLEET_BACKEND_SHARD_SIZE
    detail = (
        f"{count:,} sites hold a port on a backend shard each; the shards have room for {room:,} "
        f"({ports:,} ports: {ports // size:,} backend shards of {size:,} sites, WPFLEET_BACKEND_SHARD_SIZE; "
        f"{settings.WPFLEET_CAPACITY_ADDRESS_RESERVE:,} kept free: WPFLEET_CAPACITY_ADDRESS_RESERVE)"
    )
    try:
        limit = probe.neighbour_limit()
    except (OSError, ValueError) as error:
        # The ports still count; the table's room is only not known.
        detail += f"; the kernel's neighbour table: unknown ({error})"
    else:
        neighbours = neighbour_room(limit)
        detail += (
            f"; the kernel's neighbour table has room for {neighbours:,} "
            f"(net.ipv4.neigh.default.gc_thresh3={limit:,} entries, {NEIGHBOUR_ENTRIES_PER_SITE} a site, "
            f"{NEIGHBOUR_RESERVE} kept for the host)"
        )
        room = min(room, neighbours)
    return Reading("addresses", count, room, "sites", count < room, detail)


def _db_connections(probe: Probe) -> Reading:
    try:
        connected, most = probe.db_connections()
    except (InfraError, OSError) as error:
        return _unknown("db_connections", "connections", error)
    free = settings.WPFLEET_CAPACITY_DB_CONNECTIONS_FREE
    return Reading(
        "db_connections",
        connected,
        max(0, most - free),
        "connections",
        most - connected >= free,
        f"{connected:,} of {most:,} MariaDB connections in use; {free:,} must stay free "
        "(WPFLEET_CAPACITY_DB_CONNECTIONS_FREE)",
    )


def _readings(probe: Probe | None) -> Iterator[Reading]:
    """Each resource in RESOURCES order, read only when asked for: a refusal stops at the first."""
    probe = probe if probe is not None else HostProbe()
    count = _site_count()
    readers: tuple[Callable[[], Reading], ...] = (
        lambda: _sites(count),
        lambda: _memory(probe, count),
        lambda: _disk(probe),
        lambda: _addresses(probe, count),
        lambda: _db_connections(probe),
    )
    for read in readers:
        yield read()


def host_capacity(probe: Probe | None = None) -> list[Reading]:
    """Every resource, for the admin's home."""
    return list(_readings(probe))


def check_capacity(probe: Probe | None = None) -> None:
    """CapacityExhausted for the first resource a new site would exhaust; unknown ones refuse nothing."""
    for reading in _readings(probe):
        if not reading.ok:
            raise CapacityExhausted(reading.name, reading.detail)
