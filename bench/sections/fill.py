"""Section 4: what a new site costs as the host fills up (0, 100, 500, 1,000 existing sites).

The existing sites are filler route files in Caddy's routes directory, one
per filler hostname, written the way the panel writes a site's route (Caddy
serves a hostname while ``<routes dir>/<hostname>`` exists, and proxies it to
the upstream ``<hostname>.wpfleet.invalid:80``). No filler has a backend, so its upstream
does not resolve: checked at each level, a filler hostname answers 502 (bad
gateway) over HTTPS, and an unknown hostname 404 over plain HTTP. Caddy
itself never reloads, whatever the number of routes.

Filler hostnames (``bench-filler-0000.<base domain>``) have a hyphen in their
first label, which no site name has, so they can never be a site's hostname;
their first line carries the filler owner, which the panel's ``routes()``
never takes for one of its sites, and cleanup removes only files carrying it.

What is measured at each level is a new site's POST→ACTIVE and its steps;
``route`` (writing the site's route file) and ``live_check`` (the first HTTPS
request through Caddy, on-demand certificate included) are the steps that
deal with Caddy. Not reproduced: certificates of the existing sites (no filler
gets one, except the one checked at each level), and their containers, volumes and
databases; what scales with those (Caddy's certificate cache, Docker's own
lists, MariaDB's catalogue) is not measured here.
"""

from __future__ import annotations

import time

from bench import cleanup, config, measure
from bench.sections import Context, timed

FILLER_PREFIX = config.FILLER_PREFIX


def filler_host(index: int, base_domain: str) -> str:
    return f"{FILLER_PREFIX}{index:04d}.{base_domain}"


def filler_route(index: int) -> bytes:
    # The panel's own marker is "# wpfleet owner=<owner> site=<site>"; this
    # one names the filler owner, so no panel takes the file for a site of its own.
    return f"{cleanup.FILLER_MARKER}{FILLER_PREFIX}{index:04d}\n".encode()


class Fillers:
    """Filler route files in the Caddy container, added in one tar stream per level."""

    def __init__(self) -> None:
        from django.conf import settings

        from sites.provisioning.steps import Infra

        self.infra = Infra()
        self.caddy = self.infra.caddy
        self.base_domain = settings.WPFLEET_BASE_DOMAIN
        self.count = 0

    def grow_to(self, level: int) -> float:
        """Write fillers up to ``level`` (one put_archive); returns the seconds it took."""
        started = time.perf_counter()
        if level > self.count:
            files = {filler_host(i, self.base_domain): (filler_route(i), 0o644, 0, 0) for i in range(self.count, level)}
            container = self.infra.docker.container(self.caddy.container_name)
            if container is None:
                raise RuntimeError(f"container {self.caddy.container_name} does not exist")
            self.infra.docker.put_files(container, self.caddy.routes_dir, files)
            self.count = level
        return time.perf_counter() - started

    def _status(self, get, host: str, timeout: float) -> int | str:
        """The status Caddy answers, or the error's text when there is no answer (TLS refused, ...)."""
        from sites.infra.errors import InfraError

        try:
            return get(host, "/", timeout=timeout).status_code
        except InfraError as exc:
            return str(exc)[:200]

    def verify(self) -> dict:
        """A filler hostname is routed (502 over HTTPS: its upstream does not resolve); an
        unknown one is not (404 over plain HTTP; over HTTPS, no certificate: recorded only)."""
        unknown = f"nosuchsite-bench.{self.base_domain}"
        result: dict = {
            "unknown_host_http_status": self._status(self.caddy.get_plain_http, unknown, 10),
            "unknown_host_https": self._status(self.caddy.get, unknown, 10),
        }
        if self.count:
            host = filler_host(self.count - 1, self.base_domain)
            result["filler_host"] = host
            # Generous: the first request gets the name a certificate, then Caddy fails to dial.
            result["filler_host_https_status"] = self._status(self.caddy.get, host, 20)
            result["routed"] = result["filler_host_https_status"] == 502 and result["unknown_host_http_status"] == 404
        return result


def _level(ctx: Context, fillers: Fillers, level: int) -> dict:
    plan = ctx.plan
    write_s = fillers.grow_to(level)
    verified = fillers.verify()
    samples = measure.provision_sequential(ctx.api, plan.fill_sites_per_level, plan.batch_timeout(1))
    deleted = measure.delete_sites(ctx.api, [s["site"] for s in samples], plan.batch_timeout(len(samples)))
    summary = measure.summarize(samples)
    routed = {True: "routed", False: "NOT ROUTED as expected", None: "no fillers"}[verified.get("routed")]
    print(
        f"  fill {level}: {routed}; POST→ACTIVE p50 {summary['post_to_active_s'].get('p50')} s, "
        f"route step p50 {summary['steps'].get('route', {}).get('p50')} s, "
        f"live_check p50 {summary['steps'].get('live_check', {}).get('p50')} s",
        flush=True,
    )
    return {
        "existing": level,
        "write_fillers_s": round(write_s, 3),
        "verify": verified,
        "post_to_active": summary["post_to_active_s"],
        "summary": summary,
        "samples": samples,
        "delete": deleted,
    }


def _p50(level: dict, step: str | None) -> float | None:
    """POST→ACTIVE p50 of the level, or that of one step (None: no sample)."""
    d = level["post_to_active"] if step is None else level["summary"]["steps"].get(step, {})
    return d.get("p50")


def _added(level: dict, base: dict, step: str | None, digits: int) -> float | None:
    now, then = _p50(level, step), _p50(base, step)
    return None if now is None or then is None else round(now - then, digits)


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
    base = next((lv for lv in levels if lv["existing"] == 0), None)
    for lv in levels:
        if base is None:
            break
        added = _added(lv, base, None, 3)
        if added is not None:
            lv["added_post_to_active_s"] = added
            lv["added_route_step_s"] = _added(lv, base, "route", 4)
            lv["added_live_check_s"] = _added(lv, base, "live_check", 3)
    return {
        "levels": levels,
        "filler_hosts": filler_host(0, fillers.base_domain).replace("0000", "NNNN"),
        "filler_owner": config.FILLER_OWNER,
        "stale_fillers_removed": stale,
        "fillers_removed": removed,
    }
