"""Section 4: what a new site costs as the host fills up (0, 100, 500, 1,000 existing sites).

The existing sites are filler snippets in Caddy's sites/ directory, each
routing its own hostname to one shared upstream name that does not resolve:
Caddy resolves upstreams per request, not at load, so the config Caddy must
parse and load grows exactly as with real sites (checked: a filler hostname
answers 502, bad gateway, and an unknown hostname 404). Containers, volumes
and databases of 1,000 sites are not built; what scales with them (Docker's
own lists, MariaDB's catalogue) is not measured here.
"""

from __future__ import annotations

import statistics
import time

import requests

from bench import cleanup, config, measure
from bench.sections import Context, timed
from bench.stats import dist

# One shared upstream for every filler; never resolved at load time.
FILLER_UPSTREAM = "wpfleet-bench-filler-upstream:80"


def filler_name(index: int) -> str:
    return f"fill{index:04d}"


def filler_snippet(index: int, base_domain: str) -> bytes:
    name = filler_name(index)
    return (
        f"# wpfleet owner={config.FILLER_OWNER} site={name}\n"
        f"http://{name}.{base_domain} {{\n\treverse_proxy {FILLER_UPSTREAM}\n}}\n"
    ).encode()


class Fillers:
    """Filler snippets in the Caddy container, added in one tar stream per level."""

    def __init__(self) -> None:
        from django.conf import settings

        from sites.provisioning.steps import Infra

        self.infra = Infra()
        self.caddy = self.infra.caddy
        self.base_domain = settings.WPFLEET_BASE_DOMAIN
        self.caddy_url = settings.WPFLEET_CADDY_URL
        self.count = 0

    def grow_to(self, level: int) -> float:
        """Write fillers up to ``level`` (one put_archive); returns the seconds it took."""
        started = time.perf_counter()
        if level > self.count:
            files = {
                f"{filler_name(i)}.caddy": (filler_snippet(i, self.base_domain), 0o644, 0, 0)
                for i in range(self.count, level)
            }
            container = self.infra.docker.container(self.caddy.container_name)
            self.infra.docker.put_files(container, self.caddy.sites_dir, files)
            self.count = level
        return time.perf_counter() - started

    def status_of(self, host: str) -> int:
        try:
            return requests.get(self.caddy_url + "/", headers={"Host": host}, timeout=10).status_code
        except requests.RequestException:
            return 0

    def verify(self) -> dict:
        """A filler hostname is routed (502: its upstream does not resolve), an unknown one is not (404)."""
        result = {"unknown_host_status": self.status_of(f"nosuchsite-bench.{self.base_domain}")}
        if self.count:
            result["filler_host_status"] = self.status_of(f"{filler_name(self.count - 1)}.{self.base_domain}")
            result["routed"] = result["filler_host_status"] == 502 and result["unknown_host_status"] == 404
        return result

    def timed_reloads(self, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            self.caddy.reload()
            samples.append(round(time.perf_counter() - started, 4))
        return samples

    def timed_exec_baseline(self, count: int) -> list[float]:
        """`docker exec caddy true`: the part of a reload's time that is only the exec round trip."""
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            self.infra.docker.exec(self.caddy.container_name, ["true"])
            samples.append(round(time.perf_counter() - started, 4))
        return samples


def _level(ctx: Context, fillers: Fillers, level: int) -> dict:
    plan = ctx.plan
    write_s = fillers.grow_to(level)
    fillers.caddy.reload()  # apply the new fillers; not timed (it is the first load of this size)
    verified = fillers.verify()
    reloads = fillers.timed_reloads(plan.fill_reloads)
    baseline = fillers.timed_exec_baseline(plan.fill_reloads)
    samples = measure.provision_sequential(ctx.api, plan.fill_sites_per_level, plan.batch_timeout(1))
    deleted = measure.delete_sites(ctx.api, [s["site"] for s in samples], plan.batch_timeout(len(samples)))
    summary = measure.summarize(samples)
    print(
        f"  fill {level}: reload p50 {statistics.median(reloads):.3f} s, "
        f"POST→ACTIVE p50 {summary['post_to_active_s'].get('p50')} s",
        flush=True,
    )
    return {
        "existing": level,
        "write_fillers_s": round(write_s, 3),
        "verify": verified,
        "reload_s": reloads,
        "reload": dist(reloads, digits=4),
        "exec_baseline_s": baseline,
        "caddy_reload_step": summary["steps"].get("caddy_reload", {}),
        "post_to_active": summary["post_to_active_s"],
        "summary": summary,
        "samples": samples,
        "delete": deleted,
    }


@timed
def run(ctx: Context) -> dict:
    plan = ctx.plan
    ctx.panel.ensure_cluster(plan.workers)
    fillers = Fillers()
    # Leftovers of an interrupted run would skew level 0.
    stale = cleanup.remove_fillers()
    levels = []
    try:
        for level in sorted(plan.fill_levels):
            levels.append(_level(ctx, fillers, level))
    finally:
        removed = cleanup.remove_fillers()
        fillers.caddy.reload()
    base = next((lv for lv in levels if lv["existing"] == 0), None)
    for lv in levels:
        if base and lv["post_to_active"].get("p50") is not None and base["post_to_active"].get("p50") is not None:
            lv["added_post_to_active_s"] = round(lv["post_to_active"]["p50"] - base["post_to_active"]["p50"], 3)
            lv["added_reload_s"] = round(lv["reload"]["p50"] - base["reload"]["p50"], 4)
    return {
        "levels": levels,
        "upstream": FILLER_UPSTREAM,
        "stale_fillers_removed": stale,
        "fillers_removed": removed,
    }
