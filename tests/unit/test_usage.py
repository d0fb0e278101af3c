"""Usage read in bulk (sites.ops.usage) and site logs (sites.ops.logs), with a fake engine and a fake host.

The fake engine answers the one listing a pass may make and counts every
call; the host's files (cgroups, json-file logs) are a tree in tmp_path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import types
from pathlib import Path

import pytest

from jobs import registry
from sites.models import Site
from sites.ops import usage as usage_module
from sites.ops.logs import site_logs
from sites.ops.usage import collect_usage

MB = 1024 * 1024
T0 = dt.datetime(2025, 11, 26, 12, 0, tzinfo=dt.UTC).timestamp()


class FakeEngine:
    """The engine as a pass sees it: one listing; any other call is a failure of the test."""

    def __init__(self, containers: list[dict]):
        self.containers = containers
        self.calls: list[str] = []

    def container_summaries(self) -> list[dict]:
        self.calls.append("container_summaries")
        return [dict(c) for c in self.containers]

    def root_dir(self) -> str:
        self.calls.append("root_dir")
        return "/nowhere"

    def __getattr__(self, name: str):
        raise AssertionError(f"a usage pass called the engine's {name}()")


class Host:
    """A Docker host's files under tmp_path: cgroup v1 trees and the engine's json-file logs."""

    def __init__(self, root: Path):
        self.cgroup = root / "cgroup"
        self.docker = root / "docker"
        self.state = root / "var" / "usage.json"

    def cgroup_v1(self, cid: str, usage: int, inactive_file: int, cpu_ns: int, cache: int = 0) -> None:
        memory = self.cgroup / "memory" / "docker" / cid
        cpu = self.cgroup / "cpuacct" / "docker" / cid
        memory.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        (memory / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (memory / "memory.stat").write_text(
            f"cache {cache}\nrss 1\ninactive_file {inactive_file}\n"
            f"total_cache {cache}\ntotal_rss 1\ntotal_inactive_file {inactive_file}\n"
        )
        (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")

    def log_path(self, cid: str) -> Path:
        return self.docker / "containers" / cid / f"{cid}-json.log"

    def log(self, cid: str, *entries: tuple[float, str, str], rotated: bool = False) -> None:
        """Append (time, stream, text) entries as the json-file driver writes them."""
        path = self.log_path(cid)
        if rotated:
            path = path.with_name(path.name + ".1")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as out:
            for at, stream, text in entries:
                stamp = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
                out.write(json.dumps({"log": text + "\n", "stream": stream, "time": stamp}, separators=(",", ":")))
                out.write("\n")

    def rotate(self, cid: str) -> None:
        path = self.log_path(cid)
        os.replace(path, path.with_name(path.name + ".1"))
        path.touch()

    def collect(self, engine: FakeEngine, now: float, **kwargs) -> dict:
        return collect_usage(
            docker=engine,
            cgroup_root=self.cgroup,
            docker_root=self.docker,
            state_path=self.state,
            now=now,
            **kwargs,
        )


def access(path: str = "/") -> str:
    return f'172.18.0.3 - - [26/Nov/2025:12:00:00 +0000] "GET {path} HTTP/1.1" 200 615 "-" "curl/8.0"'


def summary(site: str, role: str, cid: str, state: str = "running", created: float = T0 - 86400) -> dict:
    return {
        "Id": cid,
        "Names": [f"/{role}_{site}"],
        "Labels": {"wpfleet.owner": "wpfleet-test", "wpfleet.site": site, "wpfleet.role": role},
        "State": state,
        "Created": int(created),
    }


def make_site(name: str, status: str = Site.Status.ACTIVE) -> Site:
    return Site.objects.create(name=name, domain=f"{name}.wpfleet.test", status=status)


def cid(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


# --- memory ---------------------------------------------------------------------------------


def test_memory_is_usage_minus_inactive_file_summed_over_the_sites_containers(db, host):
    site = make_site("alpha")
    host.cgroup_v1(cid(1), usage=100 * MB, inactive_file=30 * MB, cpu_ns=0, cache=50 * MB)
    host.cgroup_v1(cid(2), usage=20 * MB, inactive_file=5 * MB, cpu_ns=0, cache=8 * MB)
    engine = FakeEngine([summary("alpha", "php", cid(1)), summary("alpha", "nginx", cid(2))])

    report = host.collect(engine, T0)

    site.refresh_from_db()
    # As `docker stats` on cgroup v1: usage_in_bytes - total_inactive_file (not - cache).
    assert site.usage_memory == (100 - 30 + 20 - 5) * MB
    assert site.usage_at is not None
    assert report["sites"] == 1 and report["containers"] == 2 and report["problems"] == []


def test_inactive_file_larger_than_usage_leaves_usage(db, host):
    site = make_site("alpha")
    host.cgroup_v1(cid(1), usage=10 * MB, inactive_file=12 * MB, cpu_ns=0)
    host.collect(FakeEngine([summary("alpha", "php", cid(1))]), T0)
    site.refresh_from_db()
    assert site.usage_memory == 10 * MB


# --- CPU -------------------------------------------------------------------------------------


def test_cpu_is_the_counters_growth_over_the_time_between_two_passes(db, host):
    site = make_site("alpha")
    engine = FakeEngine([summary("alpha", "php", cid(1)), summary("alpha", "nginx", cid(2))])
    host.cgroup_v1(cid(1), usage=MB, inactive_file=0, cpu_ns=5_000_000_000)
    host.cgroup_v1(cid(2), usage=MB, inactive_file=0, cpu_ns=1_000_000_000)

    host.collect(engine, T0)
    site.refresh_from_db()
    assert site.usage_cpu is None  # a first reading has nothing to compare with

    # 60 s later: php used 15 s of CPU (25 %), nginx 0.6 s (1 %).
    host.cgroup_v1(cid(1), usage=MB, inactive_file=0, cpu_ns=20_000_000_000)
    host.cgroup_v1(cid(2), usage=MB, inactive_file=0, cpu_ns=1_600_000_000)
    host.collect(engine, T0 + 60)
    site.refresh_from_db()
    assert site.usage_cpu == pytest.approx(26.0)

    # The PHP container restarted (same id, a new cgroup: its counter starts again).
    host.cgroup_v1(cid(1), usage=MB, inactive_file=0, cpu_ns=3_000_000_000)
    host.cgroup_v1(cid(2), usage=MB, inactive_file=0, cpu_ns=1_600_000_000)
    host.collect(engine, T0 + 120)
    site.refresh_from_db()
    assert site.usage_cpu == pytest.approx(5.0)


def test_a_container_created_since_the_previous_pass_counts_all_its_cpu(db, host):
    site = make_site("alpha")
    host.cgroup_v1(cid(1), usage=MB, inactive_file=0, cpu_ns=0)
    host.collect(FakeEngine([summary("alpha", "php", cid(1))]), T0)

    # The PHP container was re-created 30 s ago (a new id), and has used 3 s of CPU since.
    host.cgroup_v1(cid(9), usage=MB, inactive_file=0, cpu_ns=3_000_000_000)
    host.collect(FakeEngine([summary("alpha", "php", cid(9), created=T0 + 30)]), T0 + 60)
    site.refresh_from_db()
    assert site.usage_cpu == pytest.approx(10.0)


def test_passes_come_at_most_every_interval_unless_forced(db, host, settings):
    settings.WPFLEET_USAGE_INTERVAL_SECONDS = 60
    site = make_site("alpha")
    host.cgroup_v1(cid(1), usage=MB, inactive_file=0, cpu_ns=0)
    engine = FakeEngine([summary("alpha", "php", cid(1))])
    assert host.collect(engine, T0)["sites"] == 1
    host.cgroup_v1(cid(1), usage=2 * MB, inactive_file=0, cpu_ns=0)

    assert host.collect(engine, T0 + 30) == {}  # too soon: nothing read, nothing stored
    site.refresh_from_db()
    assert site.usage_memory == MB
    assert engine.calls == ["container_summaries"]

    assert host.collect(engine, T0 + 57)["sites"] == 1  # housekeeping's minute, a little early
    assert host.collect(engine, T0 + 58, force=True)["sites"] == 1


# --- stopped, suspended, missing ------------------------------------------------------------


def test_stopped_suspended_and_missing_containers_use_nothing(db, host):
    suspended = make_site("susp", Site.Status.SUSPENDED)
    empty = make_site("gone")
    building = make_site("newer", Site.Status.PROVISIONING)
    # Cgroup files left behind must not be read for stopped containers.
    host.cgroup_v1(cid(1), usage=50 * MB, inactive_file=0, cpu_ns=10**9)
    host.log(cid(2), (T0 - 7200, "stdout", access()))  # served before it was suspended
    engine = FakeEngine(
        [
            summary("susp", "php", cid(1), state="exited"),
            summary("susp", "nginx", cid(2), state="exited"),
            summary("newer", "php", cid(3)),
        ]
    )

    host.collect(engine, T0)

    for site in (suspended, empty):
        site.refresh_from_db()
        assert (site.usage_memory, site.usage_cpu, site.usage_requests) == (0, 0.0, 0), site.name
        assert site.usage_at is not None
    building.refresh_from_db()
    assert building.usage_at is None  # only ACTIVE and SUSPENDED sites are read


def test_a_running_container_whose_cgroup_cannot_be_read_is_unknown_not_zero(db, host):
    site = make_site("alpha")  # the engine on another host: no cgroup files here
    report = host.collect(FakeEngine([summary("alpha", "php", cid(1))]), T0)
    site.refresh_from_db()
    assert site.usage_memory is None and site.usage_cpu is None
    assert report["problems"] == ["1 container(s) without readable cgroup files"]


def test_cgroup_v2_layout_is_read_too(db, host):
    site = make_site("alpha")
    scope = host.cgroup / "system.slice" / f"docker-{cid(1)}.scope"
    scope.mkdir(parents=True)
    (scope / "memory.current").write_text(f"{40 * MB}\n")
    (scope / "memory.stat").write_text(f"anon {30 * MB}\nfile {10 * MB}\ninactive_file {4 * MB}\n")
    (scope / "cpu.stat").write_text("usage_usec 2000000\nuser_usec 1\nsystem_usec 1\n")
    host.collect(FakeEngine([summary("alpha", "php", cid(1))]), T0)
    site.refresh_from_db()
    assert site.usage_memory == 36 * MB


# --- one engine call per pass, whatever the number of sites -----------------------------------


def test_a_pass_makes_one_engine_call_whatever_the_number_of_sites(db, host, django_assert_max_num_queries):
    containers = []
    for n in range(60):
        name = f"s{n:03d}"
        make_site(name)
        for role, offset in (("php", 0), ("nginx", 1000)):
            host.cgroup_v1(cid(n + offset), usage=MB, inactive_file=0, cpu_ns=0)
            containers.append(summary(name, role, cid(n + offset)))
        host.log(cid(n + 1000), (T0 - 10, "stdout", access()))
    engine = FakeEngine(containers)

    with django_assert_max_num_queries(4):  # the sites, then one bulk UPDATE (in a transaction)
        report = host.collect(engine, T0)

    assert engine.calls == ["container_summaries"]
    assert report["sites"] == 60 and report["containers"] == 120
    assert set(Site.objects.values_list("usage_memory", "usage_requests")) == {(2 * MB, 1)}

    # Without a root given, the engine's data directory is asked once per process, not per site.
    usage_module._engine_root_dir.clear()
    engine.calls.clear()
    collect_usage(docker=engine, cgroup_root=host.cgroup, state_path=host.state, now=T0 + 60)
    collect_usage(docker=engine, cgroup_root=host.cgroup, state_path=host.state, now=T0 + 120)
    assert engine.calls == ["container_summaries", "root_dir", "container_summaries"]
    usage_module._engine_root_dir.clear()


# --- requests: nginx's access log -----------------------------------------------------------


def test_requests_are_access_lines_of_the_last_hour_read_from_where_the_last_pass_stopped(db, host):
    site = make_site("alpha")
    nginx = cid(2)
    engine = FakeEngine([summary("alpha", "php", cid(1)), summary("alpha", "nginx", nginx)])
    host.cgroup_v1(cid(1), usage=MB, inactive_file=0, cpu_ns=0)
    host.cgroup_v1(nginx, usage=MB, inactive_file=0, cpu_ns=0)
    host.log(
        nginx,
        (T0 - 7200, "stdout", access("/two-hours-ago")),
        (T0 - 3500, "stdout", access("/a")),
        (T0 - 3500, "stdout", "/docker-entrypoint.sh: Configuration complete; ready for start up"),
        (T0 - 60, "stderr", "2025/11/26 11:59:00 [error] 29#29: *1 open() failed"),
        (T0 - 30, "stdout", access("/b?wpfleet_login=x")),
        (T0 - 1, "stdout", access('/c "stream":"stdout","time":"2025-11-26T11:59"')),
    )
    first = host.collect(engine, T0)
    site.refresh_from_db()
    assert site.usage_requests == 3  # not the old line, the entrypoint's message or the error log

    # The next pass reads only what was written since; a line being written waits for its end.
    host.log(nginx, (T0 + 20, "stdout", access("/d")))
    with open(host.log_path(nginx), "a") as out:
        out.write('{"log":"172.18.0.3 - - [half a line')
    second = host.collect(engine, T0 + 60)
    site.refresh_from_db()
    assert site.usage_requests == 4
    assert 0 < second["log_bytes"] < first["log_bytes"]

    # An hour later the first lines have left the hour.
    with open(host.log_path(nginx), "a") as out:
        out.write(' GET /e HTTP/1.1\\" 200 1 \\"-\\" \\"x\\"\\n","stream":"stdout","time":"2025-11-26T13:00:30.1Z"}\n')
    host.collect(engine, T0 + 3600 + 10)
    site.refresh_from_db()
    assert site.usage_requests == 2  # /d (12:00) and /e (13:00); /a /b /c were at 11:01-11:59


def test_requests_follow_the_log_through_a_rotation_and_recount_when_lost(db, host):
    site = make_site("alpha")
    nginx = cid(2)
    engine = FakeEngine([summary("alpha", "nginx", nginx, state="exited")])
    host.log(nginx, *[(T0 - 100, "stdout", access(f"/{n}")) for n in range(5)])
    host.collect(engine, T0)

    # The driver rotated (json.log -> json.log.1) after 2 more lines; 3 more in the new file.
    host.log(nginx, *[(T0 + 10, "stdout", access(f"/x{n}")) for n in range(2)])
    host.rotate(nginx)
    host.log(nginx, *[(T0 + 20, "stdout", access(f"/y{n}")) for n in range(3)])
    host.collect(engine, T0 + 60)
    site.refresh_from_db()
    assert site.usage_requests == 10

    # Rotated twice between passes: the position is lost; what the driver keeps is counted again.
    host.rotate(nginx)
    host.log(nginx, (T0 + 70, "stdout", access("/z")))
    host.rotate(nginx)
    host.log(nginx, (T0 + 80, "stdout", access("/w")))
    host.collect(engine, T0 + 120)
    site.refresh_from_db()
    assert site.usage_requests == 2  # the two files the driver keeps


def test_logs_seen_for_the_first_time_are_read_within_a_budget_per_pass(db, host, monkeypatch):
    engine = FakeEngine([summary(name, "nginx", cid(n), state="exited") for n, name in enumerate(("alpha", "beta"))])
    for n in range(2):
        host.log(cid(n), *[(T0 - 10, "stdout", access(f"/{i}")) for i in range(100)])
    size = host.log_path(cid(0)).stat().st_size
    monkeypatch.setattr(usage_module, "BOOTSTRAP_BUDGET", size + size // 2)
    make_site("alpha"), make_site("beta")

    report = host.collect(engine, T0)
    assert report["log_bytes"] == size
    assert dict(Site.objects.values_list("name", "usage_requests")) == {"alpha": 100, "beta": None}

    host.log(cid(0), (T0 + 10, "stdout", access("/more")))
    host.collect(engine, T0 + 60)  # alpha's log is read from where it stopped; beta's whole now
    assert dict(Site.objects.values_list("name", "usage_requests")) == {"alpha": 101, "beta": 100}


def test_requests_are_unknown_when_the_log_is_not_on_this_host(db, host):
    site = make_site("alpha")
    host.cgroup_v1(cid(2), usage=MB, inactive_file=0, cpu_ns=0)
    host.collect(FakeEngine([summary("alpha", "nginx", cid(2))]), T0)
    site.refresh_from_db()
    assert site.usage_requests is None and site.usage_memory == MB


# --- disk ------------------------------------------------------------------------------------


def test_disk_comes_from_the_quota_adapter_only_when_quotas_are_on(db, host, settings, monkeypatch):
    alpha, beta = make_site("alpha"), make_site("beta")
    engine = FakeEngine([])
    settings.WPFLEET_QUOTA_ROOT = ""
    host.collect(engine, T0)
    alpha.refresh_from_db()
    assert alpha.usage_disk is None

    calls = []

    class DiskQuotas:
        def __init__(self, root):
            self.root = root

        def usage_all(self):
            calls.append(self.root)
            return {"alpha": (123 * MB, 2048 * MB)}

    monkeypatch.setitem(sys.modules, "sites.infra.quota", types.SimpleNamespace(DiskQuotas=DiskQuotas))
    settings.WPFLEET_QUOTA_ROOT = "/srv/wpfleet-sites"
    host.collect(engine, T0 + 60)
    alpha.refresh_from_db()
    beta.refresh_from_db()
    assert (alpha.usage_disk, beta.usage_disk) == (123 * MB, None)
    assert calls == ["/srv/wpfleet-sites"]  # one call for every site

    class Broken(DiskQuotas):
        def usage_all(self):
            raise OSError("quota: no such filesystem")

    monkeypatch.setitem(sys.modules, "sites.infra.quota", types.SimpleNamespace(DiskQuotas=Broken))
    report = host.collect(engine, T0 + 120)
    alpha.refresh_from_db()
    assert alpha.usage_disk is None and alpha.usage_at is not None
    assert report["problems"] == ["disk usage not read: quota: no such filesystem"]


def test_usage_is_a_housekeeping_periodic():
    assert "usage" in registry.periodic()


# --- logs ------------------------------------------------------------------------------------


class FakeLogs:
    def __init__(self, text: str):
        self.text = text
        self.asked: list[tuple[str, int]] = []

    def logs(self, name: str, tail: int, labels: dict[str, str] | None = None) -> str:
        self.asked.append((name, tail))
        return self.text


@pytest.mark.parametrize("lines", [0, -1, 1001, True, "20", 2.5, None])
def test_lines_out_of_bounds_are_refused(db, settings, lines):
    settings.WPFLEET_LOG_LINES_MAX = 1000
    engine = FakeLogs("")
    with pytest.raises(ValueError, match="lines must be a whole number from 1 to 1000"):
        site_logs(make_site("alpha"), "nginx", lines, docker=engine)
    assert engine.asked == []


def test_an_unknown_source_is_refused(db):
    with pytest.raises(ValueError, match="source must be one of nginx, php, not 'mysql'"):
        site_logs(make_site("alpha"), "mysql", 10, docker=FakeLogs(""))


def test_logs_are_the_containers_last_lines_with_secrets_redacted(db, settings):
    settings.WPFLEET_LOG_LINES_MAX = 1000
    site = make_site("alpha")
    engine = FakeLogs(
        "2025-11-26T12:00:00.1Z line one\n"
        f"2025-11-26T12:00:01.1Z db error: password {site.db_password} refused\n"
        '2025-11-26T12:00:02.1Z 10.0.0.1 - 26/Nov/2025:12:00:02 +0000 "GET /index.php?wpfleet_login=1.2.abc.def&x=1" 302\n'
        '2025-11-26T12:00:03.1Z "GET /wp-login.php?action=rp&key=Zk3JXq&login=bob HTTP/1.1" 200\n'
    )
    assert site_logs(site, "php", 4, docker=engine) == [
        "2025-11-26T12:00:00.1Z line one",
        "2025-11-26T12:00:01.1Z db error: password [redacted] refused",
        '2025-11-26T12:00:02.1Z 10.0.0.1 - 26/Nov/2025:12:00:02 +0000 "GET /index.php?wpfleet_login=[redacted]&x=1" 302',
        '2025-11-26T12:00:03.1Z "GET /wp-login.php?action=rp&key=[redacted]&login=bob HTTP/1.1" 200',
    ]
    assert engine.asked == [("php_alpha", 4)]
    assert site_logs(site, "nginx", 1000, docker=engine)[0] == "2025-11-26T12:00:00.1Z line one"
    assert engine.asked[-1] == ("nginx_alpha", 1000)
