"""Section 5: idle memory per site (PHP-FPM + nginx), from the containers' memory cgroups.

Read straight from cgroup v1 files (memory.usage_in_bytes, memory.stat) of
each container's cgroup, found through its init process; on cgroup v2 or if
the files are not readable, from the engine's stats API. "Without cache" is
what `docker stats` shows (usage - total_inactive_file); "unreclaimable" is
usage minus file-backed page cache (total_cache - total_shmem): what the site
holds even under memory pressure, the figure the target is judged on.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import measure
from bench.sections import Context, timed
from bench.stats import dist

MB = 1024 * 1024


def _read_cgroup_v1(pid: int) -> dict | None:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    if "memory" not in paths:
        return None  # cgroup v2
    base = Path("/sys/fs/cgroup/memory") / paths["memory"].lstrip("/")
    try:
        usage = int((base / "memory.usage_in_bytes").read_text())
        stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
    except OSError:
        return None
    pids = None
    if "pids" in paths:
        try:
            pids = int((Path("/sys/fs/cgroup/pids") / paths["pids"].lstrip("/") / "pids.current").read_text())
        except OSError:
            pass
    return {
        "source": "cgroup-v1",
        "usage": usage,
        "cache": int(stat.get("total_cache", stat.get("cache", 0))),
        "inactive_file": int(stat.get("total_inactive_file", stat.get("inactive_file", 0))),
        "rss": int(stat.get("total_rss", stat.get("rss", 0))),
        # Why "no cache" can still be large: shared memory (php's opcache) counts as cache,
        # but sits on the anon LRU, so docker stats' inactive_file does not remove it.
        "shmem": int(stat.get("total_shmem", stat.get("shmem", 0))),
        "active_file": int(stat.get("total_active_file", stat.get("active_file", 0))),
        "mapped_file": int(stat.get("total_mapped_file", stat.get("mapped_file", 0))),
        "pids": pids,
    }


def _read_stats_api(container) -> dict:
    stats = container.stats(stream=False)
    memory = stats.get("memory_stats", {})
    inner = memory.get("stats", {})
    return {
        "source": "docker-stats-api",
        "usage": memory.get("usage", 0),
        "cache": inner.get("total_cache", inner.get("cache", inner.get("file", 0))),
        "inactive_file": inner.get("total_inactive_file", inner.get("inactive_file", 0)),
        "rss": inner.get("total_rss", inner.get("rss", inner.get("anon", 0))),
        "pids": stats.get("pids_stats", {}).get("current"),
    }


def container_memory(docker, name: str) -> dict | None:
    """One reading of a running container's memory cgroup; None if it is missing or not running."""
    container = docker.container(name)
    if container is None or container.status != "running":
        return None
    pid = container.attrs.get("State", {}).get("Pid") or 0
    reading = _read_cgroup_v1(pid) if pid else None
    if reading is None:
        try:
            reading = _read_stats_api(container)
        except Exception:  # the container went away between inspect and stats
            return None
    # docker stats (cgroup v1): usage minus inactive file pages, when that is smaller.
    inactive = reading["inactive_file"] if reading["inactive_file"] < reading["usage"] else 0
    reading["no_cache_docker_stats"] = reading["usage"] - inactive
    reading["no_cache_total_cache"] = max(0, reading["usage"] - reading["cache"])
    # What the kernel cannot take back under memory pressure: everything but
    # file-backed page cache (shared memory is counted in cache, yet stays).
    reading["unreclaimable"] = max(0, reading["usage"] - max(0, reading["cache"] - reading.get("shmem", 0)))
    return reading


def site_memory(docker, site: str) -> dict:
    """php + nginx of one site, in MB, from one reading of each container."""
    php, nginx = container_memory(docker, f"php_{site}"), container_memory(docker, f"nginx_{site}")
    out: dict = {"site": site, "php": php, "nginx": nginx}
    if not (php and nginx):
        out["error"] = "php or nginx container missing or not running"
    else:
        for key in ("usage", "no_cache_docker_stats", "no_cache_total_cache", "unreclaimable", "rss", "shmem"):
            out[f"{key}_mb"] = round((php.get(key, 0) + nginx.get(key, 0)) / MB, 2)
        out["php_no_cache_mb"] = round(php["no_cache_docker_stats"] / MB, 2)
        out["nginx_no_cache_mb"] = round(nginx["no_cache_docker_stats"] / MB, 2)
        out["pids"] = (php.get("pids"), nginx.get("pids"))
    return out


def read_all(docker, sites: list[str], rounds: int = 3, interval: float = 1.0) -> list[dict]:
    """A few readings per site, a second apart; keeps the one with the median no-cache figure."""
    readings: dict[str, list[dict]] = {site: [] for site in sites}
    for index in range(rounds):
        if index:
            time.sleep(interval)
        for site in sites:
            readings[site].append(site_memory(docker, site))
    chosen = []
    for _site, rows in readings.items():
        rows = [r for r in rows if "no_cache_docker_stats_mb" in r]
        if rows:
            rows.sort(key=lambda r: r["no_cache_docker_stats_mb"])
            chosen.append(rows[len(rows) // 2])
    return chosen


def _processes(docker, site: str) -> dict:
    """`docker top` of one idle site's containers: what is still running."""
    out = {}
    for name in (f"php_{site}", f"nginx_{site}"):
        container = docker.container(name)
        try:
            top = container.top(ps_args="-o pid,rss,args") if container else {}
            out[name] = [" ".join(p) for p in top.get("Processes", [])]
        except Exception as exc:
            out[name] = [f"error: {exc}"]
    return out


def _summary(rows: list[dict]) -> dict:
    return {
        key: dist((r[key] for r in rows), digits=2)
        for key in (
            "usage_mb",
            "no_cache_docker_stats_mb",
            "no_cache_total_cache_mb",
            "unreclaimable_mb",
            "rss_mb",
            "shmem_mb",
            "php_no_cache_mb",
            "nginx_no_cache_mb",
        )
    }


@timed
def run(ctx: Context) -> dict:
    from sites.provisioning.steps import Infra

    plan = ctx.plan
    ctx.panel.ensure_cluster(plan.workers)
    docker = Infra().docker
    samples = measure.provision_batch(ctx.api, plan.density_sites, plan.batch_timeout(plan.density_sites))
    active = [s["site"] for s in samples if s.get("status") == "DONE"]
    try:
        # Right after the live check: php-fpm still has the child that served it.
        fresh = read_all(docker, active, rounds=1)
        last_active = max((s["active_at"] for s in samples if s.get("active_at")), default=time.time())
        time.sleep(max(0.0, last_active + plan.idle_seconds - time.time()))
        idled_s = round(time.time() - last_active, 1)
        idle = read_all(docker, active)
        processes = _processes(docker, active[0]) if active else {}
    finally:
        deleted = measure.delete_sites(ctx.api, [s["site"] for s in samples], plan.batch_timeout(len(samples)))
    if not idle:
        raise RuntimeError(f"no site's memory could be read ({len(active)} ACTIVE); did the engine restart?")
    summary = _summary(idle)
    per_site = summary["no_cache_docker_stats_mb"]
    print(
        f"  density: {len(idle)} sites idle {idled_s} s, php+nginx without cache p50 {per_site.get('p50')} MB, "
        f"max {per_site.get('max')} MB (raw p50 {summary['usage_mb'].get('p50')} MB)",
        flush=True,
    )
    return {
        "sites": len(active),
        "idle_s_before_reading": idled_s,
        "summary_idle": summary,
        "summary_fresh": _summary(fresh),
        "unreadable": sorted(set(active) - {r["site"] for r in idle}),
        # Processes per container (php, nginx) at idle: ondemand should leave php-fpm at its master.
        "pids_idle": sorted({str(tuple(r["pids"])) for r in idle if r.get("pids")}),
        "processes_example": processes,
        "idle": idle,
        "fresh": fresh,
        "provision": measure.summarize(samples),
        "delete": deleted,
    }
