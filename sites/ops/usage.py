"""Each site's memory, CPU, disk and requests, read in bulk and stored on the site.

A pass (housekeeping, at most every WPFLEET_USAGE_INTERVAL_SECONDS) makes
one Docker API call whatever the number of sites: the engine's summary of
this owner's containers (id, labels, state). Everything else is read from
the Docker host's own files, as root on that host:

- memory: the container's cgroup (v1: ``memory/docker/<id>``), usage minus
  inactive file cache, as ``docker stats`` counts it (v1:
  ``memory.usage_in_bytes - total_inactive_file``; v2: ``memory.current -
  inactive_file``), summed over the site's running containers;
- CPU: the cgroup's CPU time (v1: ``cpuacct.usage``), its growth since the
  previous pass over the time between them, in % of one CPU;
- requests: the lines of nginx's access log (its stdout) in the last hour,
  counted from the json-file log of the site's nginx container
  (``<docker root>/containers/<id>/<id>-json.log`` and ``.log.1``), read
  from where the previous pass stopped: a pass reads what was logged since;
- disk: the quota adapter (sites.infra.quota) in one call, when
  WPFLEET_QUOTA_ROOT is set; otherwise None (sizing each volume would walk
  every file of every site).

The previous CPU counters and each log's read position and per-minute
counts are kept in a JSON file under var/ between passes (a log seen for
the first time is read whole, within BOOTSTRAP_BUDGET per pass). The
values are stored with one UPDATE statement per site, run as one
``executemany`` in one transaction. A value that cannot be read (the
engine on another host, a cgroup layout not known here) is stored as None,
never as a guess; a stopped or missing container uses nothing: 0.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from sites.models import Site

log = logging.getLogger("wpfleet.usage")

CGROUP_ROOT = "/sys/fs/cgroup"
# Whatever a log file holds beyond this is not read in one pass (the
# containers' json-file driver keeps 1 MB per file: steps._limits).
READ_CAP = 4 * 1024 * 1024
HOUR = dt.timedelta(hours=1)
# Bytes of a log file's start kept to recognise it at the next pass.
HEAD = 64
# Logs seen for the first time (or lost track of) are read whole, about
# 10 ms per MB: at most this much of them per pass, the rest at the next.
BOOTSTRAP_BUDGET = 64 * 1024 * 1024

# One access-log line of nginx's combined format, as the json-file driver
# writes it: {"log":"<address> - <user> [...","stream":"stdout","time":"<RFC 3339 UTC>"}.
# The entrypoint's own messages (stdout too) and the error log (stderr) do not match.
_ACCESS_LINE = re.compile(
    rb'^\{"log":"[0-9A-Fa-f.:]+ - [^\n]*"stream":"stdout",(?:"attrs":\{[^}\n]*\},)?'
    rb'"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d)',
    re.MULTILINE,
)


class ContainerSource(Protocol):
    """What a pass asks the engine (sites.infra.docker_host.DockerHost)."""

    def container_summaries(self) -> list[dict]: ...

    def root_dir(self) -> str: ...


@dataclass
class SiteUsage:
    memory: int | None = 0
    cpu: float | None = 0.0
    requests: int | None = 0


@dataclass
class _Pass:
    now: float
    cgroup_root: Path
    docker_root: Path
    previous_at: float | None
    cpu: dict[str, list[float]]
    logs: dict[str, dict[str, Any]]
    cutoff_minute: str
    new_cpu: dict[str, list[float]] = field(default_factory=dict)
    new_logs: dict[str, dict[str, Any]] = field(default_factory=dict)
    bytes_read: int = 0
    bootstrap_left: int = 0
    deferred: int = 0
    unreadable: set[str] = field(default_factory=set)


# --- the pass --------------------------------------------------------------------------


def collect_usage(
    *,
    force: bool = False,
    docker: ContainerSource | None = None,
    cgroup_root: str | Path = CGROUP_ROOT,
    docker_root: str | Path | None = None,
    state_path: str | Path | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Read the usage of every ACTIVE and SUSPENDED site and store it on the sites.

    Runs at most every WPFLEET_USAGE_INTERVAL_SECONDS unless ``force``; returns
    {} when it did not run (too soon, or another pass holds the state),
    else what it did: sites, containers, log bytes read, seconds, problems.
    """
    started = time.monotonic()
    state_file = Path(state_path) if state_path else default_state_path()
    with _locked(state_file) as locked:
        if not locked:
            return {}
        state = _load(state_file)
        now = time.time() if now is None else now
        previous_at = state.get("at")
        interval = settings.WPFLEET_USAGE_INTERVAL_SECONDS
        # Housekeeping's minute is not exact: a little early is on time.
        if (
            not force
            and isinstance(previous_at, int | float)
            and 0 <= now - previous_at < interval - min(5, interval / 10)
        ):
            return {}
        sites = list(
            Site.objects.filter(status__in=(Site.Status.ACTIVE, Site.Status.SUSPENDED))
            .only("pk", "name")
            .order_by("name")
        )
        docker = docker or _docker()
        summaries = docker.container_summaries()
        problems: list[str] = []
        if docker_root is None:
            docker_root = _engine_root(docker)
        run = _Pass(
            now=now,
            cgroup_root=Path(cgroup_root),
            docker_root=Path(docker_root),
            previous_at=previous_at if isinstance(previous_at, int | float) else None,
            cpu=state.get("cpu") or {},
            logs=state.get("logs") or {},
            cutoff_minute=(dt.datetime.fromtimestamp(now, dt.UTC) - HOUR).strftime("%Y-%m-%dT%H:%M"),
            bootstrap_left=BOOTSTRAP_BUDGET,
        )
        by_site: dict[str, list[dict]] = defaultdict(list)
        for summary in summaries:
            name = (summary.get("Labels") or {}).get("wpfleet.site")
            if name:
                by_site[name].append(summary)
        disk, disk_problem = _disk_usage()
        if disk_problem:
            problems.append(disk_problem)
        rows = []
        for site in sites:
            usage = site_usage(by_site.get(site.name, []), run)
            cpu = None if usage.cpu is None else round(usage.cpu, 2)
            rows.append((usage.memory, cpu, None if disk is None else disk.get(site.name), usage.requests, site.pk))
        _store(rows, timezone.now())
        _save(state_file, {"at": now, "cpu": run.new_cpu, "logs": run.new_logs})
    if run.unreadable:
        problems.append(f"{len(run.unreadable)} container(s) without readable cgroup files")
    if run.deferred:
        log.info("usage: %d log(s) to count from the start at the next pass", run.deferred)
    return {
        "sites": len(sites),
        "containers": len(summaries),
        "log_bytes": run.bytes_read,
        "seconds": round(time.monotonic() - started, 3),
        "problems": problems,
    }


FIELDS = ("usage_memory", "usage_cpu", "usage_disk", "usage_requests", "usage_at")


def _store(rows: list[tuple[Any, ...]], stamp: dt.datetime) -> None:
    """(memory, cpu, disk, requests, pk) of each site, with the time they were read: one UPDATE per site.

    One statement run for each row in one transaction: Django's
    bulk_update builds a CASE per field and row, some seconds at 1,000
    sites; this is some tens of milliseconds.
    """
    meta = Site._meta
    quote = connection.ops.quote_name
    columns = {field.name: str(field.column) for field in meta.concrete_fields}
    assignments = ", ".join(f"{quote(columns[name])} = %s" for name in FIELDS)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(columns['id'])} = %s"
    at = connection.ops.adapt_datetimefield_value(stamp)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, [(*row[:4], at, row[4]) for row in rows])


def housekeeping_usage() -> list[str]:
    """The periodic form (sites.apps): quiet (an empty list) unless something could not be read."""
    return collect_usage().get("problems") or []


def site_usage(containers: list[dict], run: _Pass) -> SiteUsage:
    """One site's usage from its containers' summaries (the engine's listing) and files."""
    usage = SiteUsage()
    for summary in containers:
        cid = str(summary.get("Id") or "")
        if not cid:
            continue
        labels = summary.get("Labels") or {}
        if labels.get("wpfleet.role") == "nginx":
            usage.requests = _add(usage.requests, _requests(cid, run))
        if summary.get("State") not in ("running", "paused"):
            continue  # a stopped container uses no memory, no CPU
        memory, cpu_ns = read_cgroup(run.cgroup_root, cid)
        if memory is None or cpu_ns is None:
            run.unreadable.add(cid)
        usage.memory = _add(usage.memory, memory)
        usage.cpu = _add(usage.cpu, _cpu_percent(cid, cpu_ns, summary.get("Created"), run))
    return usage


def _add(total: Any, value: Any) -> Any:
    return None if total is None or value is None else total + value


# --- memory and CPU: the cgroup files -------------------------------------------------------


# Where the engine puts a container's cgroup (the cgroupfs driver, then the
# systemd driver): v1 memory and cpuacct directories, or the v2 directory.
_V1_LAYOUTS = ("{controller}/docker/{cid}", "{controller}/system.slice/docker-{cid}.scope")
_V2_LAYOUTS = ("docker/{cid}", "system.slice/docker-{cid}.scope")


def read_cgroup(root: Path, cid: str) -> tuple[int | None, int | None]:
    """(memory in bytes as ``docker stats`` counts it, CPU time in ns) of a running container.

    Plain reads of small files: a few tens of microseconds each.
    """
    base = str(root)
    for layout in _V1_LAYOUTS:
        memory_dir = f"{base}/{layout.format(controller='memory', cid=cid)}"
        try:
            usage = int(_read(f"{memory_dir}/memory.usage_in_bytes"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            usage = None
        memory = cpu = None
        try:
            if usage is not None:
                inactive = _stat_value(_read(f"{memory_dir}/memory.stat"), b"total_inactive_file") or 0
                memory = usage - inactive if inactive < usage else usage
        except (OSError, ValueError):
            pass
        try:
            cpu = int(_read(f"{base}/{layout.format(controller='cpuacct', cid=cid)}/cpuacct.usage"))
        except (OSError, ValueError):
            pass
        return memory, cpu
    for layout in _V2_LAYOUTS:
        directory = f"{base}/{layout.format(cid=cid)}"
        try:
            usage = int(_read(f"{directory}/memory.current"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            usage = None
        memory = cpu = None
        try:
            if usage is not None:
                inactive = _stat_value(_read(f"{directory}/memory.stat"), b"inactive_file") or 0
                memory = usage - inactive if inactive < usage else usage
        except (OSError, ValueError):
            pass
        try:
            usec = _stat_value(_read(f"{directory}/cpu.stat"), b"usage_usec")
            cpu = None if usec is None else usec * 1000
        except (OSError, ValueError):
            pass
        return memory, cpu
    return None, None


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _stat_value(stat: bytes, key: bytes) -> int | None:
    """The value of ``key`` in a cgroup stat file ("key value" lines); None when absent."""
    prefix = key + b" "
    if stat.startswith(prefix):
        start = 0
    else:
        start = stat.find(b"\n" + prefix) + 1
        if start == 0:
            return None
    end = stat.find(b"\n", start)
    return int(stat[start + len(prefix) : end if end >= 0 else len(stat)])


def _cpu_percent(cid: str, cpu_ns: int | None, created: object, run: _Pass) -> float | None:
    """% of one CPU since the previous reading of this container (None: no previous reading)."""
    if cpu_ns is None:
        return None
    run.new_cpu[cid] = [cpu_ns, run.now]
    previous = run.cpu.get(cid)
    if previous:
        before, at = previous
        if cpu_ns < before:  # restarted (same id, a new cgroup): all of it is since then
            before = 0
    elif isinstance(created, int | float) and run.previous_at is not None and created > run.previous_at:
        # Created since the previous pass: all its CPU time is since its creation.
        before, at = 0, created
    else:
        return None  # first sight: the next pass knows
    elapsed = run.now - at
    if elapsed <= 0:
        return None
    return max(0.0, (cpu_ns - before) / 1e9 / elapsed * 100)


# --- requests: nginx's access log, as the json-file driver keeps it ------------------------


def _requests(cid: str, run: _Pass) -> int | None:
    """Access-log lines of the container in the last hour (None: its log cannot be read here)."""
    current = run.docker_root / "containers" / cid / f"{cid}-json.log"
    rotated = current.with_name(current.name + ".1")
    try:
        now_stat = current.stat()
    except OSError:
        return None
    previous = run.logs.get(cid) or {}
    minutes: Counter[str] = Counter(previous.get("m") or {})
    stored = previous.get("off")
    offset = stored if isinstance(stored, int) else 0
    chunks: list[tuple[Path, int]]
    if _same_file(current, now_stat, previous):
        chunks = [(current, offset)]  # what was logged since the previous pass
    else:
        old_stat = _stat_or_none(rotated)
        if old_stat and _same_file(rotated, old_stat, previous):
            # Rotated once since: the rest of the old file, then the new one.
            chunks = [(rotated, offset), (current, 0)]
        else:
            # First sight, or more was logged than the driver keeps: count what it keeps.
            minutes = Counter()
            chunks = [(current, 0)]
            size = min(now_stat.st_size, READ_CAP)
            if old_stat and old_stat.st_mtime >= run.now - HOUR.total_seconds():
                chunks.insert(0, (rotated, 0))
                size += min(old_stat.st_size, READ_CAP)
            if size > run.bootstrap_left:
                run.deferred += 1
                return None
            run.bootstrap_left -= size
    position = 0
    for path, start in chunks:
        try:
            data, position = _read_lines(path, start)
        except OSError:
            return None
        run.bytes_read += len(data)
        minutes.update(match.decode() for match in _ACCESS_LINE.findall(data))
    kept = {minute: count for minute, count in minutes.items() if minute >= run.cutoff_minute}
    run.new_logs[cid] = {"ino": now_stat.st_ino, "head": _head(current), "off": position, "m": kept}
    return sum(kept.values())


def _head(path: Path) -> str:
    """The file's first bytes (its first line's nanosecond timestamp makes them unique), in hex."""
    try:
        with open(path, "rb") as handle:
            return handle.read(HEAD).hex()
    except OSError:
        return ""


def _same_file(path: Path, stat: os.stat_result, previous: dict[str, Any]) -> bool:
    """Whether ``path`` is the file the previous pass read (not another that got its inode number)."""
    offset, head = previous.get("off"), previous.get("head")
    if previous.get("ino") != stat.st_ino or not isinstance(offset, int) or offset > stat.st_size:
        return False
    return isinstance(head, str) and _head(path).startswith(head)


def _read_lines(path: Path, start: int) -> tuple[bytes, int]:
    """The whole lines of the file from ``start`` (at most READ_CAP bytes: the last ones), and where they end."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size - start > READ_CAP:
            start = size - READ_CAP
            handle.seek(start)
            skipped = handle.readline()  # a partial line
            start += len(skipped)
        handle.seek(start)
        data = handle.read(max(0, size - start))
    end = data.rfind(b"\n") + 1  # a line being written is read next time
    return data[:end], start + end


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


# --- disk: the quota adapter --------------------------------------------------------------


def _disk_usage() -> tuple[dict[str, int] | None, str]:
    """{site: bytes used} from the quotas in one call; None without quotas or when they cannot be read."""
    root = settings.WPFLEET_QUOTA_ROOT
    if not root:
        return None, ""
    try:
        from sites.infra.quota import DiskQuotas

        return {name: int(used) for name, (used, _limit) in DiskQuotas(root).usage_all().items()}, ""
    except Exception as exc:
        return None, f"disk usage not read: {exc}"


# --- the state kept between passes ---------------------------------------------------------


def default_state_path() -> Path:
    owner = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.WPFLEET_OWNER)
    return Path(settings.VAR_DIR) / f"usage-{owner}.json"


@contextmanager
def _locked(state_file: Path) -> Iterator[bool]:
    """Holds the state's lock for the pass; yields False when another pass holds it."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{state_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _load(state_file: Path) -> dict[str, Any]:
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save(state_file: Path, state: dict[str, Any]) -> None:
    temporary = state_file.with_name(state_file.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(state, separators=(",", ":")))
    os.replace(temporary, state_file)


_engine_root_dir: list[str] = []


def _engine_root(docker: ContainerSource) -> str:
    # The engine's data directory changes only with its configuration: asked once per process.
    if not _engine_root_dir:
        _engine_root_dir.append(docker.root_dir())
    return _engine_root_dir[0]


def _docker() -> ContainerSource:
    from sites.infra.docker_host import DockerHost

    return DockerHost()
