"""Section 7: serving pages (issue #15): the page cache, uncached PHP, a purge, a noisy neighbour, opcache.

Everything goes over HTTPS through the lab's Caddy on loopback
(WPFLEET_CADDY_URL, 127.0.0.1:443), the site's hostname as SNI and Host
(Caddy's strict SNI answers 421 otherwise), as a browser would: every
request says ``Accept-Encoding: gzip`` (the page comes compressed).
Two sites are created through the bench's API (posted at once): the
*target*, given ``Plan.serving_posts`` published posts (wp_insert_post, run
as www-data with ``php -r`` in its PHP container) so that its home page is a
list of real posts, and the *bystander*, a fresh WordPress. The worker
cluster is stopped while pages are served (nothing of the panel runs
meanwhile: no housekeeping, no backup) and started again for the deletes.

Two clients:

- this process, one request at a time on one keep-alive connection (TCP and
  TLS set up before the clock starts; the certificate checked against the
  lab's CA): TTFB is from just before the request is written to the socket
  until the first bytes of the answer are read from it (time.perf_counter),
  the answer then read to its end (chunked or not) and checked;
- wrk (Debian's package, the section installs nothing) for the loads: a Lua
  script replaces wrk's name lookup with Caddy's address, so that the URL's
  host (the site's hostname) is both SNI and Host while the connections go
  to 127.0.0.1:443; its ``response()`` hook counts statuses and X-Cache
  values. wrk does not check certificates (it never did: it has no option
  for it). Latency percentiles are wrk's (corrected for coordinated
  omission, as wrk prints them).

Figures (each keeps its raw samples), in this order:

1. ``ttfb.warm``: uncached home page (``/?bench=<n>``: any query string
   bypasses the cache), ``serving_warm_requests`` one after another on one
   connection, after 5 discarded warm-up requests;
2. ``uncached``: wrk on ``/?bench=load``, ``serving_uncached_connections``
   connections, ``serving_load_seconds``; then the target's PHP settles
   (nginx drops a request whose client went away, PHP finishes it: wait
   until it uses < 5 % of a CPU);
5. ``purge``: a post on the home page is renamed through WordPress's REST
   API (``POST /?rest_route=/wp/v2/posts/<id>``, an application password
   made for the site's admin), the home page was a cache HIT just before;
   the anonymous home page is then asked again and again on another
   connection until the new title shows: seconds from the end of the POST's
   answer (and from its start) to the end of the first fresh answer;
1. ``ttfb.cold``: each after the target's PHP was idle ≥ 11 s and down to
   php-fpm's master alone (its ondemand pool reaped; the container's
   pids.current is polled), on a new connection. The waits carry, one per
   wait, what does not need the target's PHP: 6. the bystander's warm
   uncached TTFB alone (``bystander.alone``), then 3. ``cached``: wrk on
   ``/`` (after a request that put it in the cache),
   ``serving_cached_connections`` connections, ``serving_load_seconds``, and
   4. the hit ratio during it (X-Cache: HIT among all answers counted by the
   hook: every answer a HIT never reaches PHP), then ``cached_identity``:
   the same for ``serving_identity_seconds`` without Accept-Encoding (the
   page uncompressed, as a client that takes no gzip gets it);
6. ``bystander``: the bystander's warm uncached TTFB while the target takes
   the uncached load again; the CPU of the target's PHP container (cgroup
   cpuacct.usage, sampled every 0.5 s) against its limit (WPFLEET_PHP_CPUS),
   with the CFS throttling counters;
7. ``opcache``: on the target, last, each opcache mode in turn (the other
   one first, the configured one last, which also restores it): the PHP
   container's zz-wpfleet.ini written with that mode's
   ``templates.php_ini(mode)``, opcache's file cache in /tmp emptied, the
   container restarted (a new memory cgroup) until the home page answers;
   then warm TTFB, wrk at ``serving_uncached_connections`` for
   ``serving_opcache_load_seconds``, and after ``Plan.idle_seconds`` idle
   (and the master alone) the PHP container's memory cgroup (the breakdown
   of the density section), and one cold-pool request.

During every load the CPU of the containers involved is sampled (the
target's php and nginx, Caddy; MariaDB for uncached loads), with the
docker-proxy that publishes Caddy's port on loopback (the lab's path: every
byte goes through it, outside Caddy's cgroup) and the whole machine
(/proc/stat), so that a figure can be told from a machine that was full.

Sites are named ``sv`` + random hex, carry the bench's owner and are deleted
through the API at the end (force-removed by the provisioner's undo if that
fails, as everywhere in the bench).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import resource
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench import cleanup, config, measure
from bench.dbshare import database_share
from bench.sections import Context, timed
from bench.stats import dist

# What the issue asks (#15).
TARGETS = {
    "cached_requests_per_s": 2000.0,  # cached anonymous home page
    "uncached_ttfb_p50_ms": 40.0,  # uncached, warm pool
    "purge_to_fresh_s": 1.0,  # a post's update seen by anonymous visitors (max over repetitions)
}

# Seconds of idle after which php-fpm's ondemand pool has reaped its children
# (pm.process_idle_timeout = 10s, checked every second).
COLD_IDLE_S = 11.0
WARMUP_REQUESTS = 5
# What every request of the bench says, as a browser does (the page comes compressed).
BROWSER_HEADERS = {"User-Agent": "wpfleet-bench", "Accept": "text/html,*/*", "Accept-Encoding": "gzip"}
# The lab's database server (every site's database): its CPU is sampled during the uncached loads.
MARIADB = "wpfleet-mariadb"
PHP_INI_DIR = "/usr/local/etc/php/conf.d"
PHP_INI_FILE = "zz-wpfleet.ini"
WEBROOT = "/var/www/html"
# Opcache's file cache (templates.php_ini: opcache.file_cache = /tmp) keeps its files in /tmp/<32 hex>/.
_CLEAR_FILE_CACHE = (
    "find /tmp -mindepth 1 -maxdepth 1 -type d -regextype posix-extended -regex '/tmp/[0-9a-f]{32}' "
    "-exec rm -rf {} + ; echo done"
)


def new_name() -> str:
    """``sv`` + random hex: this section's sites, told apart from the others' at a glance."""
    return "sv" + secrets.token_hex(6)


# --- one HTTPS connection, one request at a time ------------------------------------------------


@dataclass
class Endpoint:
    """A site's hostname as reached through Caddy: SNI and Host, the connection to Caddy's address."""

    host: str
    address: str
    port: int
    context: ssl.SSLContext

    @classmethod
    def of(cls, host: str) -> Endpoint:
        from django.conf import settings

        url = urlsplit(settings.WPFLEET_CADDY_URL)
        context = ssl.create_default_context(cafile=ca_bundle())
        return cls(host, url.hostname or "127.0.0.1", url.port or 443, context)

    def url(self, path: str) -> str:
        """The URL wrk is given: its host is SNI and Host; its lookup is replaced (see WRK_SCRIPT)."""
        return f"https://{self.host}{'' if self.port == 443 else f':{self.port}'}{path}"


def ca_bundle() -> str | None:
    from django.conf import settings

    lab = config.VAR / "lab-ca.crt"
    return settings.WPFLEET_CA_BUNDLE or (str(lab) if lab.is_file() else None)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    ttfb_s: float  # the request written → the first bytes of the answer read
    total_s: float  # the request written → the whole answer read
    sent_at: float  # time.perf_counter() just before the request was written
    done_at: float  # time.perf_counter() once the whole answer was read
    reused: bool  # sent on a connection that had carried a request already

    @property
    def cache(self) -> str:
        return self.headers.get("x-cache", "")

    def text(self) -> str:
        body = self.body
        if self.headers.get("content-encoding", "").lower() == "gzip":
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        return body.decode("utf-8", "replace")


class Connection:
    """One keep-alive HTTPS connection to a site through Caddy (HTTP/1.1, certificate checked)."""

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self.sock: ssl.SSLSocket | None = None
        self.buf = bytearray()
        self.used = 0

    def open(self) -> float:
        """Connect (TCP and TLS); returns the seconds it took."""
        self.close()
        started = time.perf_counter()
        raw = socket.create_connection((self.endpoint.address, self.endpoint.port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.endpoint.context.wrap_socket(raw, server_hostname=self.endpoint.host)
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.used = 0
        return time.perf_counter() - started

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buf += chunk

    def _until(self, delimiter: bytes) -> bytes:
        start = 0
        while (index := self.buf.find(delimiter, start)) < 0:
            start = max(0, len(self.buf) - len(delimiter) + 1)
            self._fill()
        out = bytes(self.buf[:index])
        del self.buf[: index + len(delimiter)]
        return out

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _to_close(self) -> bytes:
        assert self.sock is not None
        while chunk := self.sock.recv(1 << 16):
            self.buf += chunk
        out = bytes(self.buf)
        self.buf = bytearray()
        return out

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> Answer:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.endpoint.host}"]
        lines += [f"{name}: {value}" for name, value in {**BROWSER_HEADERS, **(headers or {})}.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        for attempt in (0, 1):
            if self.sock is None:
                self.open()
            assert self.sock is not None
            reused = self.used > 0
            sent = time.perf_counter()
            try:
                self.sock.sendall(data)
                first = self.sock.recv(1 << 16)
                if not first:
                    raise ConnectionError("closed before answering")
            except (OSError, ConnectionError):
                # A keep-alive connection the server had closed meanwhile: once more on a new one.
                self.close()
                if attempt or not reused:
                    raise
                continue
            ttfb = time.perf_counter() - sent
            self.buf += first
            return self._answer(method, sent, ttfb, reused)
        raise AssertionError("unreachable")

    def _answer(self, method: str, sent: float, ttfb: float, reused: bool) -> Answer:
        head = self._until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        closing = headers.get("connection", "").lower() == "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n"):  # trailers, then the empty line
                        pass
                    break
                parts.append(self._exact(size))
                self._exact(2)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._exact(int(headers["content-length"]))
        else:
            body, closing = self._to_close(), True
        done = time.perf_counter()
        self.used += 1
        if closing:
            self.close()
        return Answer(status, headers, body, ttfb, done - sent, sent, done, reused)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def ttfb_series(
    endpoint: Endpoint,
    count: int | None = None,
    *,
    until: float | None = None,
    prefix: str = "warm",
    warmup: int = WARMUP_REQUESTS,
) -> dict:
    """Uncached home page, one request after another on one keep-alive connection: ``count`` of
    them, or as many as fit until time.monotonic() reaches ``until``; after ``warmup`` discarded ones."""
    samples: list[dict] = []
    warm: list[float] = []
    errors: list[str] = []
    index = 0
    with Connection(endpoint) as conn:
        conn.open()
        while True:
            if until is None and count is not None and len(samples) >= count:
                break
            if until is not None and time.monotonic() >= until:
                break
            index += 1
            try:
                answer = conn.request("GET", f"/?bench={prefix}-{index}")
            except (OSError, ConnectionError, ValueError) as exc:
                errors.append(f"{exc.__class__.__name__}: {exc}"[:200])
                if len(errors) > 20:
                    break
                continue
            if index <= warmup:
                warm.append(_ms(answer.ttfb_s))
                continue
            samples.append(
                {
                    "ttfb_ms": _ms(answer.ttfb_s),
                    "total_ms": _ms(answer.total_s),
                    "status": answer.status,
                    "x_cache": answer.cache,
                    "bytes": len(answer.body),
                }
            )
    return summarize_ttfb(samples, warmup_ms=warm, errors=errors)


def summarize_ttfb(samples: list[dict], **extra: object) -> dict:
    ok = [s for s in samples if s["status"] == 200]
    return {
        "n": len(samples),
        "ok": len(ok),
        "statuses": _count(str(s["status"]) for s in samples),
        "x_cache": _count(s["x_cache"] or "none" for s in samples),
        "ttfb_ms": dist((s["ttfb_ms"] for s in ok), digits=2),
        "total_ms": dist((s["total_ms"] for s in ok), digits=2),
        **extra,
        "samples": samples,
    }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out


# --- container cgroups: CPU, processes -----------------------------------------------------------


def _cgroup_dirs(docker, name: str) -> dict[str, Path]:
    """The cgroup v1 directories of a running container, by controller ({} on cgroup v2 or if unreadable)."""
    container = docker.container(name)
    pid = container.attrs.get("State", {}).get("Pid") if container is not None else 0
    if not pid:
        return {}
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    mounts = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                mounts[controller] = path.lstrip("/")
    dirs = {}
    for controller in ("cpuacct", "cpu", "pids"):
        if controller not in mounts:
            continue
        for mount in (controller, "cpu,cpuacct", "cpuacct,cpu"):
            candidate = Path("/sys/fs/cgroup") / mount / mounts[controller]
            if candidate.is_dir():
                dirs[controller] = candidate
                break
    return dirs


def pids_now(docker, name: str) -> int | None:
    """Processes (tasks) in the container now: 1 is php-fpm's master alone."""
    directory = _cgroup_dirs(docker, name).get("pids")
    try:
        return int((directory / "pids.current").read_text()) if directory else None
    except OSError:
        return None


def cpu_limit(docker, name: str) -> float | None:
    container = docker.container(name)
    if container is None:
        return None
    host = container.attrs.get("HostConfig", {})
    if host.get("NanoCpus"):
        return host["NanoCpus"] / 1e9
    if host.get("CpuQuota") and host.get("CpuPeriod"):
        return host["CpuQuota"] / host["CpuPeriod"]
    return None


class CpuReader:
    """CPU time of one container: cgroup v1 files (cpuacct.usage, cpu.stat), else the engine's stats API."""

    def __init__(self, docker, name: str):
        self.docker = docker
        self.name = name
        self.dirs = _cgroup_dirs(docker, name)
        self.source = "cgroup-v1" if "cpuacct" in self.dirs else "docker-stats-api"

    def read(self) -> tuple[float, int | None, int | None]:
        """(CPU seconds, throttled periods, throttled ns) so far."""
        if "cpuacct" in self.dirs:
            usage = int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
            periods = throttled = None
            if "cpu" in self.dirs:
                stat = dict(line.split() for line in (self.dirs["cpu"] / "cpu.stat").read_text().splitlines())
                periods, throttled = int(stat.get("nr_throttled", 0)), int(stat.get("throttled_time", 0))
            return usage, periods, throttled
        container = self.docker.container(self.name)
        stats = container.stats(stream=False) if container is not None else {}
        cpu = stats.get("cpu_stats", {})
        throttling = cpu.get("throttling_data", {})
        return (
            cpu.get("cpu_usage", {}).get("total_usage", 0) / 1e9,
            throttling.get("throttled_periods"),
            throttling.get("throttled_time"),
        )


HOST = "host"
# The lab publishes Caddy's port 443 on 127.0.0.1 through Docker's userland
# proxy: every byte of a loopback client goes through it, outside Caddy's cgroup.
DOCKER_PROXY = "docker-proxy :443"
_TICKS = os.sysconf("SC_CLK_TCK")


class HostCpuReader:
    """CPU seconds the whole machine spent busy (/proc/stat: all but idle and iowait)."""

    source = "/proc/stat"

    def read(self) -> tuple[float, int | None, int | None]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
        return busy / _TICKS, None, None


class ProxyCpuReader:
    """CPU seconds of the docker-proxy processes that publish host port 443 (/proc/<pid>/stat)."""

    source = "/proc/<pid>/stat"

    def __init__(self, port: int) -> None:
        self.pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"docker-proxy") and str(port).encode() in argv:
                self.pids.append(entry.name)

    def read(self) -> tuple[float, int | None, int | None]:
        total = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / _TICKS, None, None


class CpuSampler:
    """CPU used by some containers (and the host, docker-proxy) while a load runs: every ``interval`` s
    from cgroup v1 files, else at the start and the end from the engine's stats API."""

    def __init__(self, docker, names: list[str], interval: float = 0.5, port: int = 443):
        self.docker = docker
        # Containers that are not there (the database server elsewhere) are left out.
        self.readers: dict[str, CpuReader | HostCpuReader | ProxyCpuReader] = {
            name: CpuReader(docker, name) for name in names if docker.container(name) is not None
        }
        self.readers[HOST] = HostCpuReader()
        proxy = ProxyCpuReader(port)
        if proxy.pids:
            self.readers[DOCKER_PROXY] = proxy
        names = list(self.readers)
        self.interval = interval
        self.samples: dict[str, list[tuple[float, float, int | None, int | None]]] = {n: [] for n in names}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        now = time.monotonic() - self._t0
        for name, reader in self.readers.items():
            try:
                usage, periods, throttled = reader.read()
            except Exception:  # the container went away: its last figure stands
                continue
            self.samples[name].append((round(now, 3), usage, periods, throttled))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._t0 = time.monotonic()
        self._sample()
        if all(r.source != "docker-stats-api" for r in self.readers.values()):
            self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def result(self) -> dict:
        out: dict[str, dict] = {}
        for name, rows in self.samples.items():
            if len(rows) < 2:
                out[name] = {"error": "fewer than two readings"}
                continue
            (t0, u0, p0, n0), (t1, u1, p1, n1) = rows[0], rows[-1]
            per_interval = [
                (b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(rows, rows[1:], strict=False) if b[0] - a[0] > 0.2
            ]
            out[name] = {
                "source": self.readers[name].source,
                "limit_cpus": os.cpu_count()
                if name == HOST
                else cpu_limit(self.docker, name)
                if name != DOCKER_PROXY
                else None,
                "seconds": round(t1 - t0, 3),
                "cpu_s": round(u1 - u0, 3),
                "cpus_mean": round((u1 - u0) / (t1 - t0), 3) if t1 > t0 else None,
                "cpus_max": round(max(per_interval), 3) if per_interval else None,
                "interval_s": self.interval,
                "throttled_periods": None if p0 is None or p1 is None else p1 - p0,
                "throttled_s": None if n0 is None or n1 is None else round((n1 - n0) / 1e9, 3),
                # (seconds since start, CPU seconds so far): the raw readings.
                "samples": [[t, round(u - u0, 4)] for t, u, _, _ in rows],
            }
        return out


# --- wrk -------------------------------------------------------------------------------------------

# wrk takes the URL's host for SNI, for Host and for the name it looks up.
# Its lookup is a Lua function (wrk.resolve, called once before the threads
# start): replaced here by Caddy's address, the hostname stays SNI and Host.
# response() counts statuses and X-Cache values per thread; done() adds them
# up and prints one JSON line.
WRK_SCRIPT = r"""
local connect_address, connect_port = "@ADDRESS@", "@PORT@"

function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup(connect_address, connect_port)
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   caches = {}
   statuses = {}
end

function response(status, headers, body)
   local cache = headers["X-Cache"] or headers["x-cache"] or "none"
   caches[cache] = (caches[cache] or 0) + 1
   local code = tostring(status)
   statuses[code] = (statuses[code] or 0) + 1
end

local function add(into, from)
   for key, value in pairs(from or {}) do
      into[key] = (into[key] or 0) + value
   end
end

local function object(t)
   local parts = {}
   for key, value in pairs(t) do
      table.insert(parts, string.format("%q:%d", tostring(key), value))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local caches, statuses = {}, {}
   for _, thread in ipairs(threads) do
      add(caches, thread:get("caches"))
      add(statuses, thread:get("statuses"))
   end
   local p = {}
   for _, q in ipairs({50, 75, 90, 99, 99.9}) do
      table.insert(p, string.format("%q:%d", tostring(q), latency:percentile(q)))
   end
   local e = summary.errors
   io.write(string.format(
      'WPFLEET-WRK {"duration_us":%d,"requests":%d,"bytes":%d,"latency_us":{%s,"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"x_cache":%s,"statuses":%s}\n',
      summary.duration, summary.requests, summary.bytes, table.concat(p, ","),
      latency.min, latency.mean, latency.max, latency.stdev,
      e.connect, e.read, e.write, e.status, e.timeout, object(caches), object(statuses)))
end
"""


def wrk_available() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    endpoint: Endpoint,
    path: str,
    connections: int,
    seconds: int,
    *,
    gzip: bool = True,
    during: Callable[[float], dict] | None = None,
) -> dict:
    """wrk against the site for ``seconds``; ``during(deadline)`` runs meanwhile in this thread."""
    threads = max(1, min(os.cpu_count() or 1, connections))
    script = WRK_SCRIPT.replace("@ADDRESS@", endpoint.address).replace("@PORT@", str(endpoint.port))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as handle:
        handle.write(script)
        handle.flush()
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
        argv += ["-s", handle.name, "-H", f"User-Agent: {BROWSER_HEADERS['User-Agent']}"]
        if gzip:
            argv += ["-H", "Accept-Encoding: gzip"]
        argv.append(endpoint.url(path))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        meanwhile = None
        try:
            if during is not None:
                meanwhile = during(started + seconds)
            stdout, stderr = process.communicate(timeout=seconds + 60)
        except BaseException:
            process.kill()
            process.wait()
            raise
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record: dict = {
        "path": path,
        "connections": connections,
        "threads": threads,
        "seconds": seconds,
        "accept_encoding": "gzip" if gzip else "none",
        "exit_code": process.returncode,
        # CPU the load generator itself used (it shares the machine with Caddy and the site).
        "wrk_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "stdout": stdout[-3000:],
    }
    if meanwhile is not None:
        record["during"] = meanwhile
    line = next((x for x in stdout.splitlines() if x.startswith("WPFLEET-WRK ")), None)
    if process.returncode != 0 or line is None:
        record["error"] = f"wrk exited {process.returncode}: {(stderr or stdout)[-500:]}"
        return record
    parsed = json.loads(line.removeprefix("WPFLEET-WRK "))
    duration = parsed["duration_us"] / 1e6
    latency = parsed["latency_us"]
    counted = sum(parsed["x_cache"].values())
    record.update(
        {
            "requests": parsed["requests"],
            "duration_s": round(duration, 3),
            "requests_per_s": round(parsed["requests"] / duration, 1) if duration else None,
            "bytes": parsed["bytes"],
            "latency_ms": {
                key: round(latency[key] / 1000, 2)
                for key in ("50", "75", "90", "99", "99.9", "min", "mean", "max", "stdev")
            },
            "errors": parsed["errors"],
            "statuses": parsed["statuses"],
            "x_cache": parsed["x_cache"],
            "hit_ratio": round(parsed["x_cache"].get("HIT", 0) / counted, 4) if counted else None,
        }
    )
    ok = sum(n for code, n in parsed["statuses"].items() if code.startswith("2"))
    record["ok_per_s"] = round(ok / duration, 1) if duration else None
    return record


def settle(docker, php: str, timeout: float = 10.0) -> float:
    """Wait until the PHP container is done with what a load left it (nginx drops a request whose
    client went away, PHP finishes it anyway): under 5 % of a CPU over 0.25 s. Returns the seconds waited."""
    reader = CpuReader(docker, php)
    started = time.monotonic()
    before = reader.read()[0]
    while time.monotonic() - started < timeout:
        time.sleep(0.25)
        now = reader.read()[0]
        if now - before < 0.0125:
            break
        before = now
    return round(time.monotonic() - started, 2)


def loaded(
    docker,
    containers: list[str],
    endpoint: Endpoint,
    path: str,
    connections: int,
    seconds: int,
    settle_php: str | None = None,
    **kwargs,
) -> dict:
    """A wrk run with the CPU of ``containers`` sampled meanwhile; then ``settle_php`` settles."""
    load_before = [round(x, 2) for x in os.getloadavg()]
    with CpuSampler(docker, containers, port=endpoint.port) as cpu:
        record = run_wrk(endpoint, path, connections, seconds, **kwargs)
    record["cpu"] = cpu.result()
    record["loadavg_before"] = load_before
    if settle_php:
        record["php_settled_after_s"] = settle(docker, settle_php)
    return record


# --- the target's content ---------------------------------------------------------------------

# Runs as www-data in the target's PHP container, WordPress loaded as its
# CLI tools load it (sites.ops.wordpress): publishes $BENCH_POSTS posts, a
# minute apart (the last one newest, first on the home page), and makes an
# application password for the admin (after sites.ops.wordpress.LOAD_WORDPRESS).
# The answer is the line after the marker.
_CONTENT_PHP = r"""$user = get_user_by('login', getenv('WPFLEET_ADMIN_USER'));
if (!$user) { echo "\nBENCH-ERROR no user ", getenv('WPFLEET_ADMIN_USER'), "\n"; exit(3); }
wp_set_current_user($user->ID);
$paragraph = '<!-- wp:paragraph --><p>' . str_repeat(
    'A paragraph of ordinary words, some long and some short, the way a blog post reads. ', 6
) . "</p><!-- /wp:paragraph -->\n\n";
$n = (int) getenv('BENCH_POSTS');
$ids = [];
for ($i = 1; $i <= $n; $i++) {
    $id = wp_insert_post([
        'post_title' => "Bench post $i",
        'post_content' => str_repeat($paragraph, 4),
        'post_status' => 'publish',
        'post_author' => $user->ID,
        'post_date' => wp_date('Y-m-d H:i:s', time() - ($n - $i) * 60),
    ], true);
    if (is_wp_error($id)) { echo "\nBENCH-ERROR ", $id->get_error_message(), "\n"; exit(4); }
    $ids[] = $id;
}
$made = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => 'bench']);
if (is_wp_error($made)) { echo "\nBENCH-ERROR ", $made->get_error_message(), "\n"; exit(5); }
echo "\nBENCH-RESULT ", json_encode(['ids' => $ids, 'user' => $user->user_login, 'password' => $made[0]]), "\n";
"""


def add_content(docker, site: str, host: str, admin_user: str, posts: int) -> tuple[dict, str]:
    """Publish the posts; returns (record, application password). The password is not recorded."""
    from sites.ops.wordpress import LOAD_WORDPRESS

    started = time.perf_counter()
    code, output = docker.exec(
        f"php_{site}",
        ["php", "-r", LOAD_WORDPRESS + _CONTENT_PHP],
        user="www-data",
        environment={"WPFLEET_HOST": host, "WPFLEET_ADMIN_USER": admin_user, "BENCH_POSTS": str(posts)},
    )
    seconds = time.perf_counter() - started
    lines = output.splitlines()
    result = next((x for x in lines if x.startswith("BENCH-RESULT ")), None)
    if code != 0 or result is None:
        raise RuntimeError(f"adding posts to {site} failed ({code}): {output[-300:]}")
    data = json.loads(result.removeprefix("BENCH-RESULT "))
    record = {
        "how": f"docker exec -u www-data php_{site} php -r (wp-load.php; wp_insert_post × {posts}; "
        "WP_Application_Passwords::create_new_application_password)",
        "posts": posts,
        "post_ids": data["ids"],
        "admin_user": data["user"],
        "seconds": round(seconds, 3),
    }
    return record, str(data["password"])


def cache_check(endpoint: Endpoint) -> dict:
    """What X-Cache says for a query string, then for / twice (the page cache at work?)."""
    with Connection(endpoint) as conn:
        bypass = conn.request("GET", "/?bench=check")
        first = conn.request("GET", "/")
        second = conn.request("GET", "/")
    page = second.text()
    return {
        "query_string": {"status": bypass.status, "x_cache": bypass.cache},
        "home_first": {"status": first.status, "x_cache": first.cache},
        "home_second": {"status": second.status, "x_cache": second.cache},
        "home_bytes": len(page.encode()),
        "home_bytes_gzip": len(second.body),
        "content_encoding": second.headers.get("content-encoding", ""),
        "posts_listed": len(re.findall(r"Bench post \d+", page)),
        "working": bypass.cache == "BYPASS" and second.cache == "HIT",
    }


def make_cached(endpoint: Endpoint, conn: Connection, path: str = "/", tries: int = 5) -> list[str]:
    """Ask for ``path`` until the cache answers it (HIT); the X-Cache values seen."""
    seen = []
    for _ in range(tries):
        seen.append(conn.request("GET", path).cache)
        if seen[-1] == "HIT":
            break
    return seen


# --- figure 1: cold pool ------------------------------------------------------------------------


def wait_master_alone(docker, php: str, timeout: float = 10.0) -> int | None:
    """Poll the PHP container's process count until php-fpm's master is alone (ondemand reaps one idle
    child a second once they have been idle 10 s: after a load, 5 children take about 15 s)."""
    deadline = time.monotonic() + timeout
    pids = pids_now(docker, php)
    while pids is not None and pids > 1 and time.monotonic() < deadline:
        time.sleep(0.25)
        pids = pids_now(docker, php)
    return pids


def cold_samples(
    docker,
    endpoint: Endpoint,
    php: str,
    count: int,
    last_request: float,
    meanwhile: list[Callable[[], float | None]] | None = None,
) -> dict:
    """Each after the target's PHP was idle ≥ COLD_IDLE_S and down to its master, on a new connection.

    The waits carry other work that does not need the target's PHP (``meanwhile``, one job per wait,
    the rest after the last sample): a job returns the time.monotonic() of its last request that
    reached the target's PHP, None if none did; the idle time counts from there.
    """
    jobs = list(meanwhile or [])
    samples = []
    for index in range(count):
        if jobs:
            touched = jobs.pop(0)()
            if touched is not None:
                last_request = max(last_request, touched)
        time.sleep(max(0.0, last_request + COLD_IDLE_S - time.monotonic()))
        pids = wait_master_alone(docker, php)
        idle = time.monotonic() - last_request
        with Connection(endpoint) as conn:
            connect_s = conn.open()
            answer = conn.request("GET", f"/?bench=cold-{index + 1}")
        last_request = time.monotonic()
        samples.append(
            {
                "ttfb_ms": _ms(answer.ttfb_s),
                "total_ms": _ms(answer.total_s),
                "status": answer.status,
                "x_cache": answer.cache,
                "idle_s": round(idle, 2),
                "php_pids_before": pids,
                "connect_ms": _ms(connect_s),
            }
        )
    for job in jobs:
        job()
    return summarize_ttfb(samples, idle_s=COLD_IDLE_S)


# --- figure 5: purge to fresh -------------------------------------------------------------------


def purge_to_fresh(endpoint: Endpoint, user: str, password: str, post_id: int, reps: int, timeout: float) -> dict:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    rows = []
    with Connection(endpoint) as writer, Connection(endpoint) as reader:
        for rep in range(reps):
            cached_before = make_cached(endpoint, reader)
            title = f"Bench edit {rep + 1} {secrets.token_hex(4)}"
            post = writer.request(
                "POST",
                f"/?rest_route=/wp/v2/posts/{post_id}",
                headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
                body=json.dumps({"title": title}).encode(),
            )
            row: dict = {
                "title": title,
                "cached_before": cached_before,
                "post_status": post.status,
                "post_ms": _ms(post.total_s),
            }
            if post.status != 200:
                row["error"] = f"REST answered {post.status}: {post.text()[:300]}"
                rows.append(row)
                continue
            polls: list[list] = []  # [ms after the POST's answer, X-Cache, fresh]
            fresh = None
            while True:
                answer = reader.request("GET", "/")
                is_fresh = title in answer.text()
                polls.append([_ms(answer.done_at - post.done_at), answer.cache, is_fresh])
                if is_fresh:
                    fresh = answer
                    break
                if answer.done_at - post.done_at > timeout:
                    break
            row["polls"] = polls
            row["stale_answers"] = sum(1 for p in polls if not p[2])
            if fresh is None:
                row["error"] = f"the new title did not show within {timeout:g} s"
            else:
                row["from_response_s"] = round(fresh.done_at - post.done_at, 4)
                row["from_post_start_s"] = round(fresh.done_at - post.sent_at, 4)
                row["fresh_x_cache"] = fresh.cache
            rows.append(row)
    ok = [r for r in rows if "from_response_s" in r]
    return {
        "post_id": post_id,
        "repetitions": reps,
        "fresh": len(ok),
        "from_response_s": dist((r["from_response_s"] for r in ok), digits=4),
        "from_post_start_s": dist((r["from_post_start_s"] for r in ok), digits=4),
        "post_ms": dist((r["post_ms"] for r in rows), digits=2),
        "stale_answers": sum(r.get("stale_answers", 0) for r in rows),
        "rows": rows,
    }


# --- figure 7: opcache modes ----------------------------------------------------------------------


def _addresses(docker, name: str) -> dict[str, str]:
    container = docker.container(name)
    networks = container.attrs.get("NetworkSettings", {}).get("Networks", {}) if container is not None else {}
    return {network: body.get("IPAddress", "") for network, body in networks.items()}


def set_opcache(docker, endpoint: Endpoint, php: str, nginx: str, mode: str, timeout: float = 60.0) -> dict:
    """Write the mode's php.ini, empty opcache's file cache, restart the PHP container, wait for 200."""
    from sites.provisioning.templates import php_ini

    container = docker.container(php)
    if container is None:
        raise RuntimeError(f"container {php} is missing")
    docker.put_files(container, PHP_INI_DIR, {PHP_INI_FILE: (php_ini(mode).encode(), 0o644, 0, 0)})
    code, output = docker.exec(php, ["sh", "-c", _CLEAR_FILE_CACHE])
    if code != 0:
        raise RuntimeError(f"emptying opcache's file cache in {php} failed ({code}): {output[-300:]}")
    before = _addresses(docker, php)
    started = time.monotonic()
    container.restart(timeout=10)
    record: dict = {"addresses_before": before, "addresses_after": _addresses(docker, php)}
    statuses: list[int | str] = []
    while True:
        status: int | str
        try:
            with Connection(endpoint, timeout=10) as conn:
                status = conn.request("GET", "/?bench=restart").status
        except (OSError, ConnectionError, ValueError) as exc:
            status = exc.__class__.__name__
        statuses.append(status)
        if status == 200:
            break
        waited = time.monotonic() - started
        if waited > 10 and "nginx_reloaded_after_s" not in record:
            # When a site's PHP had an address of its own, nginx resolved php_<site> when
            # it started: a PHP container that came back with another address was not
            # found again until nginx reloaded (recorded; PHP now shares nginx's namespace).
            code, output = docker.exec(nginx, ["nginx", "-s", "reload"])
            record["nginx_reloaded_after_s"] = round(waited, 3)
            record["nginx_reload"] = f"exit {code}: {output[-200:]}"
        if waited > timeout:
            raise RuntimeError(f"{php} did not answer 200 within {timeout:g}s after its restart: {statuses[-5:]}")
        time.sleep(0.2)
    code, ini = docker.exec(
        php, ["php", "-r", 'echo json_encode([ini_get("opcache.file_cache"), ini_get("opcache.file_cache_only")]);']
    )
    record.update(
        {
            "restart_to_200_s": round(time.monotonic() - started, 3),
            "statuses_while_restarting": _count(str(s) for s in statuses),
            "ini_seen_by_php_cli": ini if code == 0 else f"error {code}: {ini[-200:]}",
        }
    )
    return record


def php_memory(docker, php: str, rounds: int = 3) -> dict:
    """The PHP container's memory cgroup (density's breakdown), ``rounds`` readings a second apart;
    the one with the median no-cache figure is kept, the others too (raw)."""
    from bench.sections.density import MB, container_memory

    readings = []
    for index in range(rounds):
        if index:
            time.sleep(1.0)
        reading = container_memory(docker, php)
        if reading is not None:
            readings.append(reading)
    if not readings:
        return {"error": f"{php}: memory not readable"}
    chosen = sorted(readings, key=lambda r: r["no_cache_docker_stats"])[len(readings) // 2]
    out: dict = {
        f"{key}_mb": round(chosen.get(key, 0) / MB, 2)
        for key in (
            "usage",
            "no_cache_docker_stats",
            "no_cache_total_cache",
            "unreclaimable",
            "rss",
            "shmem",
            "cache",
            "mapped_file",
        )
    }
    out["pids"] = chosen.get("pids")
    out["source"] = chosen.get("source")
    out["readings"] = readings
    return out


def opcache_mode(ctx: Context, docker, endpoint: Endpoint, php: str, nginx: str, mode: str, caddy: str) -> dict:
    plan = ctx.plan
    record: dict = {"mode": mode, "restart": set_opcache(docker, endpoint, php, nginx, mode)}
    record["ttfb"] = ttfb_series(endpoint, plan.serving_opcache_requests, prefix=f"opcache-{mode}")
    record["load"] = loaded(
        docker,
        [php, nginx, caddy, MARIADB],
        endpoint,
        f"/?bench=opcache-{mode}",
        plan.serving_uncached_connections,
        plan.serving_opcache_load_seconds,
        settle_php=php,
    )
    last = time.monotonic()
    time.sleep(plan.idle_seconds)
    record["pids_idle"] = wait_master_alone(docker, php)
    record["idle_s_before_memory"] = round(time.monotonic() - last, 1)
    record["memory_idle"] = php_memory(docker, php)
    # The pool is now reaped (idle > 10 s): one cold request in this mode.
    with Connection(endpoint) as conn:
        conn.open()
        cold = conn.request("GET", f"/?bench=opcache-{mode}-cold")
    record["cold_ttfb_ms"] = _ms(cold.ttfb_s)
    return record


# --- the section ------------------------------------------------------------------------------------


class Stopwatch:
    """Seconds each part of the section took (``lap``: since the previous lap; ``stage``: a block)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self.last, 1)
        self.last = now

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - started, 1)


def _provision(ctx: Context, names: list[str]) -> list[dict]:
    cleanup.REGISTRY.update(names)
    posted = measure.post_all(ctx.api, names)
    measure.wait_jobs([p.job_id for p in posted if p.job_id is not None], ctx.plan.batch_timeout(len(names)))
    return [measure.sample(p) for p in posted]


def _ttfb_line(label: str, t: dict) -> str:
    d = t.get("ttfb_ms", {})
    return f"{label} p50 {d.get('p50')} / p95 {d.get('p95')} ms (n={d.get('n')})"


def _load_line(r: dict) -> str:
    if r.get("error"):
        return r["error"]
    lat = r.get("latency_ms", {})
    return (
        f"{r.get('requests_per_s')} req/s, p50 {lat.get('50')} / p99 {lat.get('99')} ms, "
        f"statuses {r.get('statuses')}, X-Cache {r.get('x_cache')}"
    )


@timed
def run(ctx: Context) -> dict:
    from django.conf import settings

    from sites.models import Site
    from sites.provisioning.steps import Infra

    if not wrk_available():
        raise RuntimeError("wrk is not installed (Debian package wrk; lab/up.sh installs the host's packages)")
    plan = ctx.plan
    docker = Infra().docker
    caddy = settings.WPFLEET_CADDY_CONTAINER
    ctx.panel.ensure_cluster(plan.workers)
    target, bystander = new_name(), new_name()
    names = [target, bystander]
    result: dict = {
        "runner": "this process (TTFB, purge) and wrk (loads) over HTTPS through Caddy on loopback; "
        "Accept-Encoding: gzip",
        "targets_from_issue": TARGETS,
        "sites": {"target": target, "bystander": bystander},
        "caddy": caddy,
        "configured_opcache": settings.WPFLEET_PHP_OPCACHE,
        "php_limits": settings.WPFLEET_PHP_LIMITS,
        "nginx_limits": settings.WPFLEET_NGINX_LIMITS,
        "page_cache_seconds": settings.WPFLEET_PAGE_CACHE_SECONDS,
        "ca_bundle": ca_bundle(),
        # "wrk debian/4.1.0-3+b2 [epoll] Copyright ...": the version only.
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
    }
    php, nginx = f"php_{target}", f"nginx_{target}"
    watch = Stopwatch()
    result["stages_s"] = watch.seconds
    stage = watch.stage
    try:
        result["provision"] = _provision(ctx, names)
        failed = [s for s in result["provision"] if s.get("status") != "DONE"]
        if failed:
            raise RuntimeError(f"creating the sites failed: {[(s['site'], s.get('error')) for s in failed]}")
        # Nothing of the panel runs while pages are served (housekeeping, backups): the workers stop.
        ctx.panel.stop_cluster()
        watch.lap("provision")
        rows = {s.name: s for s in Site.objects.filter(name__in=names)}
        host, other_host = rows[target].domain, rows[bystander].domain
        endpoint, other = Endpoint.of(host), Endpoint.of(other_host)
        result["sites"].update(target_host=host, bystander_host=other_host)
        result["content"], password = add_content(docker, target, host, rows[target].admin_user, plan.serving_posts)
        result["cache_check"] = check = cache_check(endpoint)
        print(
            f"  serving: target {host} ({plan.serving_posts} posts, home page {check['home_bytes']} bytes, "
            f"{check['home_bytes_gzip']} gzip), bystander {other_host}; X-Cache: ?query {check['query_string']}, "
            f"/ {check['home_first']['x_cache']} then {check['home_second']['x_cache']}",
            flush=True,
        )

        watch.lap("content")
        # 1. warm uncached TTFB; 2. uncached load.
        ttfb: dict = {"warm": ttfb_series(endpoint, plan.serving_warm_requests)}
        result["ttfb"] = ttfb
        print("  serving: uncached " + _ttfb_line("warm TTFB", ttfb["warm"]), flush=True)
        watch.lap("warm")
        containers = [php, nginx, caddy]
        result["uncached"] = loaded(
            docker,
            [*containers, MARIADB],
            endpoint,
            "/?bench=load",
            plan.serving_uncached_connections,
            plan.serving_load_seconds,
            settle_php=php,
        )
        print(
            f"  serving: uncached, {plan.serving_uncached_connections} connections: {_load_line(result['uncached'])}",
            flush=True,
        )
        watch.lap("uncached")

        # 5. purge to fresh: the newest post is first on the home page.
        result["purge"] = purge = purge_to_fresh(
            endpoint,
            result["content"]["admin_user"],
            password,
            result["content"]["post_ids"][-1],
            plan.serving_purge_repetitions,
            timeout=15.0,
        )
        print(
            f"  serving: purge to fresh ({purge['fresh']}/{purge['repetitions']} fresh): from the POST's answer "
            f"p50 {purge['from_response_s'].get('p50')} max {purge['from_response_s'].get('max')} s, "
            f"from its start max {purge['from_post_start_s'].get('max')} s; stale answers {purge['stale_answers']}",
            flush=True,
        )
        watch.lap("purge")

        # 1. cold pool. Its waits (the target's PHP idle) carry what does not need that PHP:
        # 6. the bystander alone, and 3-4. the cached loads (every answer a HIT never reaches PHP).
        bystander_record: dict = {}

        def bystander_alone() -> float | None:
            with stage("bystander_alone"):
                bystander_record["alone"] = ttfb_series(other, plan.serving_warm_requests, prefix="alone")
            return None

        # Caddy's own address on the backend network: where traffic from outside
        # the host arrives (DNAT in the kernel), without the lab's loopback docker-proxy.
        caddy_container = docker.container(caddy)
        if caddy_container is None:
            raise RuntimeError(f"container {caddy} is missing")
        caddy_ip = caddy_container.attrs["NetworkSettings"]["Networks"][settings.WPFLEET_BACKEND_NETWORK]["IPAddress"]
        direct = dataclasses.replace(endpoint, address=caddy_ip, port=443)
        result["caddy_direct_address"] = caddy_ip

        def cached_load(key: str, seconds: int, gzip: bool, to: Endpoint = endpoint) -> Callable[[], float | None]:
            def job() -> float | None:
                with stage(key):
                    with Connection(to) as conn:
                        warmed = make_cached(to, conn)
                    touched = time.monotonic()
                    run = loaded(
                        docker,
                        containers,
                        to,
                        "/",
                        plan.serving_cached_connections,
                        seconds,
                        gzip=gzip,
                    )
                run["warmed"] = warmed
                result[key] = run
                label = ("" if gzip else ", no Accept-Encoding") + (
                    f", to Caddy's address {to.address}" if to is not endpoint else ""
                )
                print(
                    f"  serving: cached{label}, {plan.serving_cached_connections} connections: {_load_line(run)}",
                    flush=True,
                )
                # An answer that was not a HIT reached PHP: the idle time counts from the run's end.
                missed = any(value != "HIT" for value in run.get("x_cache", {}))
                return time.monotonic() if missed or run.get("error") else touched

            return job

        with stage("cold"):
            ttfb["cold"] = cold_samples(
                docker,
                endpoint,
                php,
                plan.serving_cold_samples,
                time.monotonic(),
                meanwhile=[
                    bystander_alone,
                    cached_load("cached", plan.serving_load_seconds, True),
                    cached_load("cached_identity", plan.serving_identity_seconds, False),
                    cached_load("cached_direct", plan.serving_load_seconds, True, direct),
                ],
            )
        print("  serving: uncached " + _ttfb_line("cold-pool TTFB", ttfb["cold"]), flush=True)

        # 6. the bystander while the target takes the uncached load.
        def bystander_meanwhile(deadline: float) -> dict:
            time.sleep(1.0)  # wrk's connections and the target's PHP children start
            return ttfb_series(other, until=deadline - 0.5, prefix="loaded", warmup=0)

        with stage("bystander_loaded"):
            under_load = loaded(
                docker,
                [php, f"php_{bystander}", nginx, caddy, MARIADB],
                endpoint,
                "/?bench=neighbour",
                plan.serving_uncached_connections,
                plan.serving_load_seconds,
                settle_php=php,
                during=bystander_meanwhile,
            )
        alone = bystander_record.get("alone", {})
        result["bystander"] = {
            "alone": alone,
            "under_load": under_load.pop("during", {}),
            "target_load": under_load,
        }
        cpu = under_load["cpu"].get(php, {})
        print(
            "  serving: bystander "
            + _ttfb_line("TTFB alone", alone)
            + "; "
            + _ttfb_line("while the target is loaded", result["bystander"]["under_load"])
            + f"; target php CPU mean {cpu.get('cpus_mean')} max {cpu.get('cpus_max')} of {cpu.get('limit_cpus')}",
            flush=True,
        )

        # 8. What an object cache could save at most: the database's share of an uncached page.
        with stage("database_share"), Connection(endpoint) as conn:
            result["database_share"] = share = database_share(
                docker, php, lambda path: conn.request("GET", path), plan.serving_warm_requests
            )
        print(
            f"  serving: database share of an uncached page: {share['queries_p50']} queries, "
            f"{share['db_ms_p50']} ms of {share['php_ms_p50']} ms in PHP (p50, n={share['requests']})",
            flush=True,
        )

        # 7. opcache modes on the target, the configured one last (which restores it).
        configured = settings.WPFLEET_PHP_OPCACHE
        modes = [m for m in ("file", "shm") if m != configured] + [configured]
        result["opcache"] = {"configured": configured, "modes": []}
        current = configured
        try:
            for mode in modes:
                current = mode
                with stage(f"opcache_{mode}"):
                    record = opcache_mode(ctx, docker, endpoint, php, nginx, mode, caddy)
                result["opcache"]["modes"].append(record)
                mem = record["memory_idle"]
                print(
                    f"  serving: opcache {mode}: "
                    + _ttfb_line("warm TTFB", record["ttfb"])
                    + f", {record['load'].get('requests_per_s')} req/s at {plan.serving_uncached_connections} "
                    f"connections; php idle {record['idle_s_before_memory']} s: no cache {mem.get('no_cache_docker_stats_mb')}"
                    f" MB, unreclaimable {mem.get('unreclaimable_mb')} MB (rss {mem.get('rss_mb')}, shmem "
                    f"{mem.get('shmem_mb')}, cache {mem.get('cache_mb')})",
                    flush=True,
                )
        finally:
            if current != configured:
                try:
                    result["opcache"]["restored"] = set_opcache(docker, endpoint, php, nginx, configured)
                except Exception as exc:
                    result["opcache"]["restore_error"] = f"{exc.__class__.__name__}: {exc}"
    except Exception as exc:
        result["error"] = f"{exc.__class__.__name__}: {exc}"
    finally:
        with stage("delete"):
            ctx.panel.ensure_cluster(plan.workers)
            result["delete"] = measure.delete_sites(ctx.api, names, plan.batch_timeout(len(names)))
    result["judged"] = judge(result)
    return result


# --- targets ----------------------------------------------------------------------------------------


def judge(section: dict) -> list[dict]:
    """The issue's three figures beside their targets: pass True/False, None when not measured."""
    rows = []
    # Judged where traffic from outside arrives: Caddy's own address (the
    # kernel's DNAT), not the lab's loopback docker-proxy (reported beside it).
    cached = section.get("cached_direct") or section.get("cached", {})
    via = "to Caddy's address" if section.get("cached_direct") else "via 127.0.0.1"
    rate = cached.get("requests_per_s")
    hit = cached.get("hit_ratio")
    ok_rate = cached.get("ok_per_s")
    rows.append(
        {
            "what": f"cached anonymous home page, {cached.get('connections', '?')} connections, {via}",
            "target": f"≥ {TARGETS['cached_requests_per_s']:,.0f} req/s",
            "measured": None if rate is None else f"{rate:,.0f} req/s",
            # Judged on the answers that were 2xx: an error page served fast is no page served.
            "pass": None if ok_rate is None else ok_rate >= TARGETS["cached_requests_per_s"],
            "note": ""
            if rate is None
            else f"hit ratio {hit * 100:.1f} %, statuses {cached.get('statuses')}, {cached.get('seconds')} s, "
            f"Accept-Encoding: gzip; via 127.0.0.1 (docker-proxy) {section.get('cached', {}).get('requests_per_s')} "
            f"req/s, and without gzip {section.get('cached_identity', {}).get('requests_per_s')} req/s",
        }
    )
    warm = section.get("ttfb", {}).get("warm", {}).get("ttfb_ms", {})
    p50 = warm.get("p50")
    cold = section.get("ttfb", {}).get("cold", {}).get("ttfb_ms", {})
    rows.append(
        {
            "what": "uncached home page TTFB p50, warm pool",
            "target": f"≤ {TARGETS['uncached_ttfb_p50_ms']:g} ms",
            "measured": None if p50 is None else f"{p50:.1f} ms",
            "pass": None if p50 is None else p50 <= TARGETS["uncached_ttfb_p50_ms"],
            "note": ""
            if p50 is None
            else f"n={warm.get('n')}, p95 {warm.get('p95')} ms; cold pool p50 {cold.get('p50')} ms (n={cold.get('n')})",
        }
    )
    purge = section.get("purge", {})
    worst = purge.get("from_response_s", {}).get("max")
    complete = purge.get("fresh") == purge.get("repetitions") and purge.get("repetitions")
    rows.append(
        {
            "what": "post update seen by anonymous visitors (max, from the POST's answer)",
            "target": f"≤ {TARGETS['purge_to_fresh_s']:g} s",
            "measured": None if worst is None else f"{worst:.3f} s",
            "pass": None
            if not purge
            else bool(complete) and worst is not None and worst <= TARGETS["purge_to_fresh_s"],
            "note": ""
            if not purge
            else f"{purge.get('fresh')}/{purge.get('repetitions')} fresh, p50 {purge.get('from_response_s', {}).get('p50')} s; "
            f"from the POST's start max {purge.get('from_post_start_s', {}).get('max')} s",
        }
    )
    return rows
