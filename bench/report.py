"""latest.json (merged when one section is rerun), latest.md, the console summary, and the targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Issue #5's targets.
TARGETS = {
    "sequential_p50_s": 2.5,
    "sequential_p95_s": 4.0,
    "concurrent_n": 20,
    "concurrent_workers": 4,
    "concurrent_min_per_min": 20.0,
    "fill_level": 1000,
    "fill_added_s": 0.5,
    "density_mb": 25.0,
}


# --- results file -------------------------------------------------------------------


def merge(previous: dict | None, meta: dict, sections: dict, only: list[str] | None) -> dict:
    """This run's sections; with --only, on top of the previous results' other sections."""
    merged: dict[str, Any] = {"meta": meta, "sections": {}}
    if only and previous:
        kept = {name: body for name, body in previous.get("sections", {}).items() if name not in sections}
        merged["sections"].update(kept)
        meta["sections_from_earlier_runs"] = {
            name: {
                "started_at": body.get("meta", {}).get("started_at"),
                "git_commit": previous.get("meta", {}).get("git", {}).get("commit"),
            }
            for name, body in kept.items()
        }
    merged["sections"].update(sections)
    merged["targets"] = evaluate(merged["sections"])
    return merged


def load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


# --- targets ------------------------------------------------------------------------


def _target(what: str, target: str, measured: str, ok: bool | None, note: str = "") -> dict:
    return {"what": what, "target": target, "measured": measured, "pass": ok, "note": note}


def _workers(n: int) -> str:
    return f"{n} worker" + ("" if n == 1 else "s")


def _fmt(x: float | None, unit: str = " s", digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}{unit}"


def pick_concurrent(runs: list[dict]) -> tuple[dict | None, str]:
    """The run the throughput target is judged on: N=20 with 4 workers, else the nearest there is."""
    wanted = [r for r in runs if r["n"] == TARGETS["concurrent_n"] and r["workers"] == TARGETS["concurrent_workers"]]
    if wanted:
        return wanted[0], ""
    if not runs:
        return None, ""
    run = max(runs, key=lambda r: (r["n"], r["workers"]))
    return run, f"indicative only: N={run['n']}, {_workers(run['workers'])} (quick run)"


def evaluate(sections: dict) -> list[dict]:
    rows = []
    seq = sections.get("sequential", {})
    summary = seq.get("summary")
    if summary:
        p2a = summary["post_to_active_s"]
        all_ok = summary["active"] == summary["n"]
        note = f"N={summary['n']}" + ("" if all_ok else f", only {summary['active']} ACTIVE")
        rows.append(
            _target(
                "POST→ACTIVE p50, one at a time",
                f"≤ {TARGETS['sequential_p50_s']} s",
                _fmt(p2a.get("p50")),
                all_ok and p2a.get("p50") is not None and p2a["p50"] <= TARGETS["sequential_p50_s"],
                note,
            )
        )
        rows.append(
            _target(
                "POST→ACTIVE p95, one at a time",
                f"≤ {TARGETS['sequential_p95_s']} s",
                _fmt(p2a.get("p95")),
                all_ok and p2a.get("p95") is not None and p2a["p95"] <= TARGETS["sequential_p95_s"],
                note,
            )
        )
    run, note = pick_concurrent(sections.get("concurrent", {}).get("runs", []))
    if run:
        s = run["summary"]
        rate = s.get("sites_per_min")
        ok = s["active"] == s["n"] and rate is not None and rate >= TARGETS["concurrent_min_per_min"]
        rows.append(
            _target(
                f"{TARGETS['concurrent_n']} at once: all ACTIVE, throughput",
                f"all, ≥ {TARGETS['concurrent_min_per_min']:g} sites/min",
                f"{s['active']}/{s['n']}, {_fmt(rate, ' /min', 1)}",
                ok,
                note,
            )
        )
    levels = sections.get("fill", {}).get("levels", [])
    measured_levels = [lv for lv in levels if lv["existing"] > 0 and "added_post_to_active_s" in lv]
    if measured_levels:
        top = max(measured_levels, key=lambda lv: lv["existing"])
        note = "" if top["existing"] >= TARGETS["fill_level"] else f"indicative only: at {top['existing']} existing"
        added = top["added_post_to_active_s"]
        # POST→ACTIVE differences of a few sites are mostly noise: the steps that deal with Caddy say more.
        mechanism = ", ".join(
            [
                f"{label} {top[key]:+.3f} s"
                for label, key in (("route step", "added_route_step_s"), ("live_check", "added_live_check_s"))
                if top.get(key) is not None
            ]
            + [f"{top['post_to_active'].get('n')} sites/level"]
        )
        rows.append(
            _target(
                f"added POST→ACTIVE at {TARGETS['fill_level']:,} existing sites (p50 vs 0)",
                f"< {TARGETS['fill_added_s']} s",
                _fmt(added, " s", 3),
                added < TARGETS["fill_added_s"],
                ", ".join(filter(None, [note, mechanism])),
            )
        )
    rows += _backup_targets(sections.get("backups", {}))
    idle = sections.get("density", {}).get("summary_idle", {})
    density = idle.get("unreclaimable_mb")
    if density and density.get("n"):
        stats_view = idle.get("no_cache_docker_stats_mb", {}).get("mean")
        rows.append(
            _target(
                "idle memory per site, php+nginx (mean, unreclaimable)",
                f"≤ {TARGETS['density_mb']:g} MB",
                _fmt(density["mean"], " MB", 1),
                density["mean"] <= TARGETS["density_mb"],
                f"{density['n']} sites, max {density['max']} MB; docker stats view "
                f"{_fmt(stats_view, ' MB', 1)} (reclaimable page cache included)",
            )
        )
    rows += _serving_targets(sections.get("serving", {}))
    rows += _operations_targets(sections.get("operations", {}))
    rows += _scale_targets(sections.get("scale", {}))
    return rows


def _scale_targets(section: dict) -> list[dict]:
    """Issue #14's targets (judged again from the figures)."""
    if not section.get("levels"):
        return []
    from bench.sections.scale import judge

    return [_target(r["what"], r["target"], r["measured"], r["pass"], r["note"]) for r in judge(section)]


def _operations_targets(section: dict) -> list[dict]:
    """Issue #13's targets (judged again from the figures)."""
    if not section.get("summary"):
        return []
    from bench.sections.operations import judge

    return [_target(r["what"], r["target"], r["measured"], r["pass"], r["note"]) for r in judge(section)]


def _serving_targets(section: dict) -> list[dict]:
    """Issue #15's targets (judged again from the figures)."""
    if not section or section.get("cached") is None and section.get("ttfb") is None:
        return []
    from bench.sections.serving import judge

    return [_target(r["what"], r["target"], r["measured"] or "–", r["pass"], r["note"]) for r in judge(section)]


def _upload_label(case: dict) -> str:
    size = case.get("upload_bytes") or 0
    return "fresh site" if not size else f"site with {size / 2**20:g} MiB of uploads"


def _backup_targets(section: dict) -> list[dict]:
    """Issue #12's targets, per case of the backups section (judged again from the figures)."""
    from bench.sections.backups import describe, judge

    rows = []
    for case in section.get("cases", []):
        for row in judge(case):
            rows.append(
                _target(
                    f"{row['what']}, {_upload_label(case)}",
                    row["target"],
                    describe(row),
                    row["pass"],
                    row["note"],
                )
            )
    return rows


# --- console summary ------------------------------------------------------------------


def _steps_line(summary: dict, top: int = 4) -> str:
    parts = [f"{name} {sec:.2f}" for name, sec in list(summary.get("critical_path_mean_s", {}).items())[:top]]
    return ", ".join(parts) + " s" if parts else "–"


def _dist_line(d: dict, keys=("p50", "p95", "max"), unit=" s", digits=2) -> str:
    if not d or not d.get("n"):
        return "–"
    return " / ".join(_fmt(d.get(k), "", digits) for k in keys) + unit


def summary_rows(results: dict) -> list[tuple[str, str, str]]:
    """(section, measure, value) rows: the compact table printed at the end and put atop latest.md."""
    sections = results["sections"]
    rows: list[tuple[str, str, str]] = []
    seq = sections.get("sequential", {})
    if "summary" in seq:
        s = seq["summary"]
        rows.append(
            (
                "sequential",
                f"POST→ACTIVE p50/p95/max (N={seq['n']}, {_workers(seq['workers'])})",
                _dist_line(s["post_to_active_s"]) + f"  [{s['active']}/{s['n']} ACTIVE]",
            )
        )
        rows.append(
            (
                "",
                "queue wait / wall / critical path p50",
                " / ".join(_fmt(s[k].get("p50")) for k in ("queue_wait_s", "wall_s", "critical_path_s")),
            )
        )
        rows.append(("", "critical path, mean s per step", _steps_line(s)))
    for run in sections.get("concurrent", {}).get("runs", []):
        s = run["summary"]
        rows.append(
            (
                "concurrent",
                f"N={run['n']} at once, {_workers(run['workers'])}: p50/p95/max",
                _dist_line(s["post_to_active_s"]) + f"  [{s['active']}/{s['n']}, "
                f"{_fmt(s.get('sites_per_min'), ' sites/min', 1)}]",
            )
        )
    runs = [r for r in sections.get("concurrent", {}).get("runs", []) if r["n"] == TARGETS["concurrent_n"]]
    if len(runs) > 1:
        rows.append(
            (
                "",
                f"throughput N={TARGETS['concurrent_n']} by workers",
                ", ".join(f"{r['workers']}: {_fmt(r['summary'].get('sites_per_min'), '', 1)}" for r in runs)
                + " sites/min",
            )
        )
    api = sections.get("api", {})
    if "post" in api:
        for verb, key in (("POST", "post"), ("GET", "get")):
            d = api[key]
            extra = f", first page of {api['sites_listed']} sites" if key == "get" else ""
            alone = api.get("alone", {}).get(key, {}).get("latency_s", {}).get("p50")
            extra += f"; 1 client alone p50 {_fmt(alone, ' s', 3)}" if alone is not None else ""
            rows.append(
                (
                    "api" if key == "post" else "",
                    f"{verb} /api/sites p50/p99/max ({api['clients']} clients)",
                    _dist_line(d["latency_s"], ("p50", "p99", "max"), " s", 3)
                    + f"  [{d['ok']}/{d['requests']} ok, {d['requests_per_s']} req/s{extra}]",
                )
            )
    levels = sections.get("fill", {}).get("levels", [])
    if levels:
        names = "/".join(str(lv["existing"]) for lv in levels)
        rows.append(
            (
                "fill",
                f"POST→ACTIVE p50 at {names} existing",
                " / ".join(_fmt(lv["post_to_active"].get("p50"), "") for lv in levels) + " s",
            )
        )
        rows.append(
            (
                "",
                f"step route / live_check p50 at {names} existing",
                ", ".join(
                    f"{_fmt(level_step(lv, 'route').get('p50'), '', 3)} / "
                    f"{_fmt(level_step(lv, 'live_check').get('p50'), '', 2)}"
                    for lv in levels
                )
                + " s",
            )
        )
    for index, case in enumerate(sections.get("backups", {}).get("cases", [])):
        full = _first_backup(case, "full_backup")
        second = _first_backup(case, "second_backup")
        rows.append(
            (
                "backups" if index == 0 else "",
                f"{_upload_label(case)}: backup / 2nd backup / restore / clone",
                " / ".join(_fmt(case.get(op, {}).get("post_to_done_s"), "") for op in OPERATIONS)
                + f" s  [size {_fmt_mb(full.get('size_bytes'))}, added {_fmt_mb(full.get('added_bytes'))}"
                f" then {_fmt_mb(second.get('added_bytes'), 3)}]",
            )
        )
    dens = sections.get("density", {})
    if dens.get("summary_idle"):
        s = dens["summary_idle"]
        rows.append(
            (
                "density",
                f"idle php+nginx per site, {dens['sites']} sites: unreclaimable p50/max",
                _dist_line(s.get("unreclaimable_mb", {}), ("p50", "max"), " MB", 1)
                + f"  (docker stats {_dist_line(s['no_cache_docker_stats_mb'], ('p50', 'max'), ' MB', 1)},"
                + f" raw {_dist_line(s['usage_mb'], ('p50', 'max'), ' MB', 1)})",
            )
        )
    rows += _serving_rows(sections.get("serving", {}))
    rows += _operations_rows(sections.get("operations", {}))
    rows += _scale_rows(sections.get("scale", {}))
    return rows


def _scale_rows(section: dict) -> list[tuple[str, str, str]]:
    levels = section.get("levels", [])
    if not levels:
        return []
    names = "/".join(f"{lv['existing']}" for lv in levels)
    rows: list[tuple[str, str, str]] = [
        (
            "scale",
            f"POST→ACTIVE p50 at {names} existing sites",
            " / ".join(_fmt(lv.get("post_to_active", {}).get("p50"), "") for lv in levels)
            + f" s  (n={levels[0].get('post_to_active', {}).get('n', 0)}/level)",
        ),
        (
            "",
            "host memory per site (MemAvailable) at each level",
            " / ".join(_fmt(lv.get("memory_per_site_mb"), "", 1) for lv in levels) + " MB",
        ),
        (
            "",
            "reconciler pass CPU / wall, max",
            ", ".join(
                f"{_fmt(lv.get('reconcile', {}).get('cpu_s', {}).get('max'), '')} / "
                f"{_fmt(lv.get('reconcile', {}).get('wall_s', {}).get('max'), '')}"
                for lv in levels
            )
            + " s",
        ),
        (
            "",
            "Caddy reload p50; GET list / detail p50",
            ", ".join(
                f"{_fmt(lv.get('caddy_reload', {}).get('seconds', {}).get('p50'), '')}; "
                f"{_fmt(lv.get('api', {}).get('list', {}).get('latency_s', {}).get('p50'), '', 3)} / "
                f"{_fmt(lv.get('api', {}).get('detail', {}).get('latency_s', {}).get('p50'), '', 3)}"
                for lv in levels
            )
            + " s",
        ),
        (
            "",
            "fill: sites/min per level, failed",
            ", ".join(_fmt(lv.get("fill", {}).get("sites_per_min"), "", 1) for lv in levels)
            + f" sites/min; {len(section.get('failed', []))} failed",
        ),
    ]
    stopped = section.get("stopped")
    if stopped:
        details = ", ".join(f"{k} {v}" for k, v in stopped.items() if k not in ("reason", "existing"))
        rows.append(
            (
                "",
                "filling stopped",
                f"{stopped.get('reason')} at {stopped.get('existing')} sites" + (f" ({details})" if details else ""),
            )
        )
    for key, label in (("restart", "dockerd SIGKILL"), ("power_cut", "dockerd and site containers SIGKILL")):
        restart = section.get(key) or {}
        if restart.get("ran"):
            rows.append(
                (
                    "",
                    f"{label}: all {restart.get('sites')} sites serving again after",
                    f"{_fmt(restart.get('all_serving_s'), ' s', 0)} "
                    f"(p50 {_fmt(restart.get('first_200', {}).get('p50'), ' s', 0)}, "
                    f"{restart.get('never_back')} never back)",
                )
            )
    return rows


def _restart_lines(restart: dict, settings: dict) -> list[str]:
    """The markdown lines of one engine-restart measurement (section scale)."""
    md: list[str] = []
    if restart.get("ran"):
        md += [
            f"{restart.get('what', 'dockerd SIGKILLed')} after the last level (dockerd pid {restart.get('dockerd_pid')}, "
            f"{restart.get('processes_killed', 0)} site processes), then `bash lab/up.sh` "
            f"(exit {restart.get('lab_up_rc')}; log `{restart.get('lab_up_log')}`); the engine answered again after "
            f"{_fmt(restart.get('engine_back_s'), ' s', 1)}. Every site asked through Caddy in rounds "
            f"({settings.get('probe_threads')} at a time): first 200 after the kill p50 / p95 / max "
            f"{_dist_line(restart.get('first_200', {}), ('p50', 'p95', 'max'), ' s', 0)}; all serving after "
            f"{_fmt(restart.get('all_serving_s'), ' s', 0)}; {restart.get('never_back')} of {restart.get('sites')} "
            f"never came back within {restart.get('timeout_s'):g} s.",
            "",
        ]
        if restart.get("dockerd_panics"):
            panics = restart["dockerd_panics"]
            md += [
                f"dockerd panicked {panics['count']} time(s) starting again: `{panics['first']}` (see `{panics['log']}`).",
                "",
            ]
        if restart.get("lab_up_tail"):
            md += ["lab/up.sh's last lines:", "", "```", *restart["lab_up_tail"], "```", ""]
    elif restart:
        md += [f"Engine restart: not run ({restart.get('why')}).", ""]
    return md


def _operations_rows(section: dict) -> list[tuple[str, str, str]]:
    summary = section.get("summary")
    if not summary:
        return []
    versions = section.get("php_versions", {})
    labels = {
        "suspend": "suspend (→ 503)",
        "resume": "resume (→ 200, content)",
        "php_up": f"PHP {versions.get('from')} → {versions.get('to')}",
        "php_down": f"PHP {versions.get('to')} → {versions.get('from')}",
    }
    rows: list[tuple[str, str, str]] = []
    for op, label in labels.items():
        s = summary.get(op, {})
        if s.get("n"):
            rows.append(
                (
                    "operations" if not rows else "",
                    f"{label}: POST→DONE p50/p95/max",
                    _dist_line(s["post_to_done_s"]) + f"  [{s['verified']}/{s['n']} done and verified]",
                )
            )
    mem = summary.get("memory", {})
    if mem.get("no_cache_mb", {}).get("n"):
        rows.append(
            (
                "",
                "freed by a suspend: php+nginx cgroups (no cache) p50/max; host MemAvailable gain p50/max",
                f"{_dist_line(mem['no_cache_mb'], ('p50', 'max'), ' MB', 1)}; "
                f"{_dist_line(mem.get('host_freed_mb', {}), ('p50', 'max'), ' MB', 1)}",
            )
        )
    probe = summary.get("probe", {})
    if probe.get("switches"):
        rows.append(
            (
                "",
                "probe through Caddy during the PHP switches",
                f"{probe['failures']} failed of {probe['requests']} requests ({probe['switches']} switches, "
                f"slowest {_fmt(probe.get('latency_ms_max'), ' ms', 0)})",
            )
        )
    return rows


def _ms_line(d: dict, keys=("p50", "p95")) -> str:
    return _dist_line(d, keys, " ms", 1)


def _wrk_line(run: dict) -> str:
    """req/s, latency p50/p99, and what answered (statuses, X-Cache) of one wrk run."""
    if not run:
        return "–"
    if run.get("error"):
        return "error: " + run["error"][:120]
    lat = run.get("latency_ms", {})
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(run.get("statuses", {}).items()))
    return (
        f"{_fmt(run.get('requests_per_s'), ' req/s', 0)}, p50/p99 {_fmt(lat.get('50'), '', 1)} / "
        f"{_fmt(lat.get('99'), ' ms', 1)}  [{statuses}]"
    )


def _cpu_line(cpu: dict) -> str:
    if not cpu or "cpus_mean" not in cpu:
        return "–"
    return (
        f"mean {_fmt(cpu.get('cpus_mean'), '', 2)}, max {_fmt(cpu.get('cpus_max'), '', 2)} "
        f"of {cpu.get('limit_cpus')} CPU (throttled {cpu.get('throttled_periods')} periods, "
        f"{_fmt(cpu.get('throttled_s'), ' s', 1)})"
    )


def _serving_rows(section: dict) -> list[tuple[str, str, str]]:
    if not section.get("ttfb") and not section.get("cached"):
        return []
    rows: list[tuple[str, str, str]] = []
    ttfb = section.get("ttfb", {})
    rows.append(
        (
            "serving",
            "uncached TTFB p50/p95, warm pool; cold pool",
            f"{_ms_line(ttfb.get('warm', {}).get('ttfb_ms', {}))} (n={ttfb.get('warm', {}).get('n', 0)}); "
            f"{_ms_line(ttfb.get('cold', {}).get('ttfb_ms', {}))} (n={ttfb.get('cold', {}).get('n', 0)})",
        )
    )
    for key, label in (
        ("uncached", "uncached (?query)"),
        ("cached", "cached (/)"),
        ("cached_identity", ""),
        ("cached_direct", "cached (/), to Caddy's address"),
    ):
        run = section.get(key)
        if not run:
            continue
        if key == "cached_identity":
            label = "cached (/), no Accept-Encoding"
        hit = run.get("hit_ratio")
        extra = f", hits {hit * 100:.1f} %" if key != "uncached" and hit is not None else ""
        rows.append(("", f"{label}, {run.get('connections')} conns, {run.get('seconds')} s", _wrk_line(run) + extra))
    purge = section.get("purge", {})
    if purge:
        rows.append(
            (
                "",
                "purge to fresh, from the POST's answer p50/max (from its start max)",
                _dist_line(purge.get("from_response_s", {}), ("p50", "max"), " s", 3)
                + f" ({_fmt(purge.get('from_post_start_s', {}).get('max'), ' s', 3)})"
                + f"  [{purge.get('fresh')}/{purge.get('repetitions')} fresh, {purge.get('stale_answers')} stale answers]",
            )
        )
    bystander = section.get("bystander", {})
    if bystander:
        target_php = f"php_{section.get('sites', {}).get('target')}"
        rows.append(
            (
                "",
                "bystander uncached TTFB p50/p95, alone; target loaded",
                f"{_ms_line(bystander.get('alone', {}).get('ttfb_ms', {}))}; "
                f"{_ms_line(bystander.get('under_load', {}).get('ttfb_ms', {}))}",
            )
        )
        rows.append(
            (
                "",
                "target php CPU during that load",
                _cpu_line(bystander.get("target_load", {}).get("cpu", {}).get(target_php, {})),
            )
        )
    for mode in section.get("opcache", {}).get("modes", []):
        mem = mode.get("memory_idle", {})
        rows.append(
            (
                "",
                f"opcache {mode['mode']}: warm TTFB p50/p95, req/s, php idle unreclaimable",
                f"{_ms_line(mode.get('ttfb', {}).get('ttfb_ms', {}))}, "
                f"{_fmt(mode.get('load', {}).get('requests_per_s'), ' req/s', 0)}, "
                f"{_fmt(mem.get('unreclaimable_mb'), ' MB', 1)} (rss {_fmt(mem.get('rss_mb'), '', 1)}, "
                f"shmem {_fmt(mem.get('shmem_mb'), '', 1)}, cache {_fmt(mem.get('cache_mb'), ' MB', 1)})",
            )
        )
    share = section.get("database_share")
    if share:
        rows.append(
            (
                "",
                "uncached page: MariaDB query time of the time in PHP, p50 (what an object cache could save at most)",
                f"{share.get('queries_p50')} queries, {share.get('db_ms_p50')} of {share.get('php_ms_p50')} ms "
                f"(share {share.get('db_share_p50')}, n={share.get('requests')})",
            )
        )
    return rows


OPERATIONS = ("full_backup", "second_backup", "restore", "clone")


def _first_backup(case: dict, op: str) -> dict:
    from bench.sections.backups import first_backup

    return first_backup(case, op)


def _fmt_mb(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x / 1e6:.{digits}f} MB"


def _disturbance(disturbed: dict) -> str:
    parts = []
    if "infra_after" in disturbed:
        parts.append("the shared Caddy/MariaDB restarted during it (engine or lab restart)")
    if "code_changed" in disturbed:
        parts.append("the product's code changed during it")
    return "; ".join(parts)


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def console_summary(results: dict) -> str:
    meta = results["meta"]
    git = meta.get("git", {})
    machine = meta.get("machine", {})
    lines = [
        f"wpfleet bench{' (QUICK)' if meta.get('quick') else ''}: commit {git.get('commit', '?')[:10]}"
        f"{' + ' + str(git['dirty_files']) + ' uncommitted files' if git.get('dirty_files') else ''}, "
        f"{machine.get('nproc')} CPUs, load {machine.get('loadavg_at_start')} → {meta.get('loadavg_at_end')}, "
        f"{meta.get('seconds')} s",
    ]
    rows = summary_rows(results)
    if rows:
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines += [f"  {a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    if results.get("targets"):
        lines.append("  targets:")
        for t in results["targets"]:
            note = f"  ({t['note']})" if t["note"] else ""
            lines.append(f"    {_verdict(t['pass']):<4}  {t['what']}: {t['measured']} (target {t['target']}){note}")
    for name, body in results["sections"].items():
        if body.get("error"):
            lines.append(f"  ERROR in {name}: {body['error']}")
        if body.get("meta", {}).get("disturbed"):
            lines.append(f"  WARNING: {name} was disturbed: {_disturbance(body['meta']['disturbed'])}")
    return "\n".join(lines)


# --- markdown ------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _batches(sections: dict) -> list[tuple[str, dict]]:
    batches = []
    if "summary" in sections.get("sequential", {}):
        seq = sections["sequential"]
        batches.append((f"one at a time N={seq['n']} ({seq['workers']}w)", seq["summary"]))
    for run in sections.get("concurrent", {}).get("runs", []):
        batches.append((f"at once N={run['n']} ({run['workers']}w)", run["summary"]))
    return batches


def _pp(d: dict, digits: int = 2) -> str:
    if not d or not d.get("n"):
        return "–"
    return f"{_fmt(d['p50'], '', digits)} / {_fmt(d['p95'], '', digits)}"


def markdown(results: dict, plots: list[str]) -> str:
    meta, sections = results["meta"], results["sections"]
    git, machine, settings = meta.get("git", {}), meta.get("machine", {}), meta.get("settings", {})
    docker = machine.get("docker", {})
    dirty = f" with {git['dirty_files']} uncommitted files" if git.get("dirty_files") else ""
    opcache_mode = settings.get("all_wpfleet", {}).get("WPFLEET_PHP_OPCACHE")
    opcache = f", PHP opcache {opcache_mode}" if opcache_mode else ""
    md = [
        "# wpfleet bench results",
        "",
        f"Generated {meta.get('finished_at')} by `python -m bench{' --quick' if meta.get('quick') else ''}"
        f"{' --only ' + ','.join(meta['only']) if meta.get('only') else ''}` in {meta.get('seconds')} s. "
        f"Commit `{git.get('commit', '?')[:12]}`{dirty}.",
        "",
        f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), {machine.get('memory_mb')} MB, "
        f"kernel {machine.get('kernel')}, Docker {docker.get('version')} (cgroup v{docker.get('cgroup_version')}, "
        f"{docker.get('storage_driver')}). Load average at start {machine.get('loadavg_at_start')}, at end "
        f"{meta.get('loadavg_at_end')}: other work shared the machine, see each section's load in latest.json.",
        "",
        f"Settings: control DB {settings.get('control_db')}, poll {settings.get('poll_seconds')} s, "
        f"PHP seed from `{settings.get('php_seed_from')}`, step threads {settings.get('step_threads')}, "
        f"pm={settings.get('php_pm')}, web "
        f"{settings.get('web', {}).get('gunicorn_workers')}×{settings.get('web', {}).get('threads')} gunicorn, "
        f"API rate {settings.get('api_rate')}"
        f"{opcache}.",
        "",
    ]
    if meta.get("sections_from_earlier_runs"):
        md += [
            "Sections kept from earlier runs: "
            + ", ".join(f"{k} ({v['started_at']})" for k, v in meta["sections_from_earlier_runs"].items()),
            "",
        ]
    md += ["## Summary", ""]
    md += _table(["section", "measure", "value"], [list(r) for r in summary_rows(results)])
    if results.get("targets"):
        md += ["## Targets", ""]
        md += _table(
            ["", "what", "target", "measured", "note"],
            [[_verdict(t["pass"]), t["what"], t["target"], t["measured"], t["note"]] for t in results["targets"]],
        )
    batches = _batches(sections)
    if batches:
        md += [
            "## 1–2. POST → ACTIVE",
            "",
            "Seconds, p50 / p95. Steps overlap (independent ones run in parallel), so they do not add up; "
            "*wall* is the job's claim to done, *critical path* the chain of steps that decided it.",
            "",
        ]
        step_names = []
        for _, s in batches:
            step_names += [n for n in s["steps"] if n not in step_names]
        rows = [
            ["POST→ACTIVE"] + [_pp(s["post_to_active_s"]) for _, s in batches],
            ["POST request"] + [_pp(s["post_latency_s"], 3) for _, s in batches],
            ["queue wait"] + [_pp(s["queue_wait_s"]) for _, s in batches],
        ]
        rows += [[f"step `{n}`"] + [_pp(s["steps"].get(n, {})) for _, s in batches] for n in step_names]
        rows += [
            ["wall (claim→done)"] + [_pp(s["wall_s"]) for _, s in batches],
            ["critical path"] + [_pp(s["critical_path_s"]) for _, s in batches],
            ["overhead (wall − path)"] + [_pp(s["overhead_s"], 3) for _, s in batches],
            ["ACTIVE / posted"] + [f"{s['active']}/{s['n']}" for _, s in batches],
            ["sites/min"] + [_fmt(s.get("sites_per_min"), "", 1) for _, s in batches],
        ]
        md += _table(["measure"] + [name for name, _ in batches], rows)
        md += ["Mean seconds each step adds to the critical path (what dominates):", ""]
        md += _table(
            ["batch", "critical path (mean s per step)", "most common chain"],
            [[name, _steps_line(s, top=9), next(iter(s.get("critical_paths", {})), "–")] for name, s in batches],
        )
    api = sections.get("api", {})
    if "post" in api:
        md += [
            f"## 3. API latency, {api['clients']} concurrent clients, no workers",
            "",
            f"Each client (own user and token) sends {api['requests_per_client']} requests back to back. "
            "No worker cluster runs during this section: a POST writes the site and its job and queues a "
            "task that nothing runs, so the figures are the API's own cost, not provisioning's. "
            f"GET answers the first page (100 sites) of the {api['sites_listed']} sites the POSTs created.",
            "",
        ]
        alone = api.get("alone", {})
        md += _table(
            ["request", "ok/sent", "p50 s", "p99 s", "max s", "req/s", "statuses", "one client alone p50 s"],
            [
                [
                    verb,
                    f"{api[k]['ok']}/{api[k]['requests']}",
                    _fmt(api[k]["latency_s"].get("p50"), "", 3),
                    _fmt(api[k]["latency_s"].get("p99"), "", 3),
                    _fmt(api[k]["latency_s"].get("max"), "", 3),
                    api[k]["requests_per_s"],
                    json.dumps(api[k]["status"]),
                    _fmt(alone.get(k, {}).get("latency_s", {}).get("p50"), "", 3),
                ]
                for verb, k in (("POST /api/sites", "post"), ("GET /api/sites", "get"))
            ],
        )
    levels = sections.get("fill", {}).get("levels", [])
    if levels:
        md += [
            "## 4. Cost as the host fills up",
            "",
            "Existing sites are filler route files in Caddy's routes directory (one per hostname, as the panel "
            "writes a site's route), with no backend: a filler host answers 502 over HTTPS (routed, its "
            "upstream does not resolve), an unknown host 404 over plain HTTP. Caddy never reloads. A new site's "
            "steps that deal with Caddy are `route` (writing its route file) and `live_check` (the first HTTPS "
            "request through Caddy, on-demand certificate included).",
            "",
        ]
        md += _table(
            [
                "existing",
                "write fillers s",
                "route step p50 s",
                "live_check step p50 s",
                "POST→ACTIVE p50 s",
                "added vs 0 s",
                "routed (filler HTTPS, unknown HTTP)",
            ],
            [
                [
                    f"{lv['existing']:,}",
                    _fmt(lv.get("write_fillers_s"), "", 3),
                    _fmt(level_step(lv, "route").get("p50"), "", 3),
                    _fmt(level_step(lv, "live_check").get("p50"), "", 2),
                    _fmt(lv["post_to_active"].get("p50"), "", 2),
                    _fmt(lv.get("added_post_to_active_s"), "", 3),
                    _routed(lv.get("verify", {})),
                ]
                for lv in levels
            ],
        )
    dens = sections.get("density", {})
    if dens.get("summary_idle"):
        md += [
            "## 5. Idle memory per site",
            "",
            f"{dens['sites']} ACTIVE sites, read {dens['idle_s_before_reading']} s after the last became ACTIVE "
            "(php-fpm ondemand reaps idle children after 10 s), from each container's memory cgroup. "
            "*No cache* = usage − total_inactive_file (what `docker stats` shows); "
            "*− total_cache* removes all page cache; *unreclaimable* removes only file-backed page cache "
            "(shared memory such as an opcache in SHM stays).",
            "",
        ]
        keys = [
            ("php+nginx raw usage", "usage_mb"),
            ("php+nginx no cache (docker stats)", "no_cache_docker_stats_mb"),
            ("php+nginx usage − total_cache", "no_cache_total_cache_mb"),
            ("php+nginx unreclaimable", "unreclaimable_mb"),
            ("php+nginx rss", "rss_mb"),
            ("php+nginx shmem (opcache; part of cache)", "shmem_mb"),
            ("php no cache", "php_no_cache_mb"),
            ("nginx no cache", "nginx_no_cache_mb"),
        ]
        rows = []
        for label, key in keys:
            idle, fresh = dens["summary_idle"].get(key, {}), dens["summary_fresh"].get(key, {})
            rows.append(
                [label] + [_fmt(idle.get(k), "", 1) for k in ("p50", "mean", "max")] + [_fmt(fresh.get("p50"), "", 1)]
            )
        md += _table(["MB per site", "idle p50", "idle mean", "idle max", "once all ACTIVE p50"], rows)
    md += _backups_markdown(sections.get("backups", {}))
    md += _serving_markdown(sections.get("serving", {}))
    md += _operations_markdown(sections.get("operations", {}))
    md += _scale_markdown(sections.get("scale", {}))
    errors = [(n, b["error"]) for n, b in sections.items() if b.get("error")]
    errors += [
        (n, "disturbed: " + _disturbance(b["meta"]["disturbed"]))
        for n, b in sections.items()
        if b.get("meta", {}).get("disturbed")
    ]
    if errors:
        md += ["## Errors and warnings", ""] + [f"- **{n}**: {e}" for n, e in errors] + [""]
    if plots:
        md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(md)


def level_step(level: dict, step: str) -> dict:
    """The distribution of one provisioning step at a fill level ({} when it has none)."""
    return level.get("summary", {}).get("steps", {}).get(step, {})


def _routed(verify: dict) -> str:
    routed = verify.get("routed")
    verdict = "–" if routed is None else ("yes" if routed else "NO")
    statuses = [verify.get(k) for k in ("filler_host_https_status", "unknown_host_http_status")]
    if routed is None or None in statuses:
        return verdict
    # A status code, or the text of the error when Caddy did not answer (TLS refused...).
    shown = [str(x) if isinstance(x, int) else "no answer" for x in statuses]
    return f"{verdict} ({shown[0]}, {shown[1]})"


def _backups_markdown(section: dict) -> list[str]:
    cases = section.get("cases", [])
    if not cases:
        return []
    from bench.sections.backups import describe, judge, verdict

    md = [
        "## 6. Backups, restore, clone",
        "",
        f"Each operation is timed as a user sees it: {section.get('runner')}. Repository: "
        f"`{section.get('repository')}` (local, created empty at the start of the run), "
        f"{section.get('backup_workers')} backup workers. *Size* is what restic read (the files' tar plus the "
        "database dump), *added* restic's `data_added` (new data after deduplication, before compression), "
        "*on disk* how much the repository grew. A restore's backup is the before-restore backup it takes first.",
        "",
    ]
    header = ["measure"] + [_upload_label(c) for c in cases]
    rows = [["site (clone)"] + [f"{c.get('site')} ({c.get('clone_site', '–')})" for c in cases]]
    rows.append(
        ["site created, POST→ACTIVE s"] + [_fmt(c.get("provision", {}).get("post_to_active_s"), "") for c in cases]
    )
    for op, label in (
        ("full_backup", "full backup"),
        ("second_backup", "second backup (unchanged)"),
        ("restore", "restore of the first backup"),
        ("clone", "clone, POST→ACTIVE"),
    ):
        rows.append([f"{label} s"] + [_fmt(c.get(op, {}).get("post_to_done_s"), "") for c in cases])
        rows.append(
            [f"  {label}: queue wait / claim→done s"]
            + [
                f"{_fmt(c.get(op, {}).get('queue_wait_s'), '')} / {_fmt(c.get(op, {}).get('wall_s'), '')}"
                for c in cases
            ]
        )
        if op == "clone":
            continue
        rows.append(
            [f"  {label}: backup size / added / on disk"]
            + [
                f"{_fmt_mb(_first_backup(c, op).get('size_bytes'))} / {_fmt_mb(_first_backup(c, op).get('added_bytes'), 3)}"
                f" / {_fmt_mb(c.get(op, {}).get('repository_grew_bytes'), 3)}"
                if _first_backup(c, op)
                else "–"
                for c in cases
            ]
        )
    for probe, label in (
        ("restic_open", "probe: one restic process, start to open (`restic cat config`)"),
        ("files_archive_read", "probe: webroot through the archive API, read alone"),
        ("database_dump", "probe: mariadb-dump, read alone"),
    ):
        rows.append([f"{label} s (bytes)"] + [_probe(c.get("probes", {}).get(probe, {})) for c in cases])
    md += _table(header, rows)
    md += ["Each figure beside the issue's target:", ""]
    md += _table(
        ["case", "what", "measured", "target", "", "note"],
        [
            [_upload_label(c), r["what"], describe(r), r["target"], verdict(r["pass"]), r["note"]]
            for c in cases
            for r in judge(c)
        ],
    )
    md += ["Steps of each job (seconds, in order; a clone's overlap, its critical path is given):", ""]
    step_rows = []
    for c in cases:
        for op in OPERATIONS:
            record = c.get(op, {})
            steps = record.get("steps_s")
            if not steps:
                continue
            text = ", ".join(f"`{k}` {v:.2f}" for k, v in steps.items())
            if record.get("critical_path"):
                text += f"; critical path {' > '.join(record['critical_path'])} = {record['critical_path_s']:.2f}"
            step_rows.append([_upload_label(c), op, text])
    md += _table(["case", "operation", "steps"], step_rows)
    return md


def _probe(probe: dict) -> str:
    if "seconds" not in probe:
        return probe.get("error", "–")
    nbytes = probe.get("bytes")
    return f"{probe['seconds']:.2f}" + ("" if nbytes is None else f" ({_fmt_mb(nbytes)})")


def _serving_markdown(section: dict) -> list[str]:
    if not section.get("ttfb") and not section.get("cached"):
        return []
    sites = section.get("sites", {})
    check = section.get("cache_check", {})
    php = f"php_{sites.get('target')}"
    nginx = f"nginx_{sites.get('target')}"
    md = [
        "## 7. Serving: page cache, uncached PHP, purge, a bystander, opcache",
        "",
        f"Over HTTPS through Caddy on loopback, the site's hostname as SNI and Host, `Accept-Encoding: gzip` "
        f"unless said. Target `{sites.get('target_host')}`: {section.get('content', {}).get('posts')} posts added, "
        f"home page {check.get('home_bytes')} bytes ({check.get('home_bytes_gzip')} gzip), "
        f"{check.get('posts_listed')} of the bench's posts listed; bystander `{sites.get('bystander_host')}` "
        f"(a fresh WordPress). X-Cache with a query string: {check.get('query_string', {}).get('x_cache')}; "
        f"`/` twice: {check.get('home_first', {}).get('x_cache')}, {check.get('home_second', {}).get('x_cache')}. "
        "TTFB: this process, one request at a time on one keep-alive connection (set up before the clock "
        "starts), from writing the request to reading the answer's first bytes. Loads: "
        f"{section.get('wrk', 'wrk')} (no certificate check), latency percentiles as wrk reports them. "
        f"PHP limit {section.get('php_limits', {}).get('cpus')} CPU, nginx "
        f"{section.get('nginx_limits', {}).get('cpus')} CPU; opcache configured: {section.get('configured_opcache')}.",
        "",
    ]
    ttfb = section.get("ttfb", {})
    bystander = section.get("bystander", {})
    rows = []
    for series, key, label in (
        (ttfb, "warm", "uncached, warm pool (one connection)"),
        (ttfb, "cold", "uncached, cold pool (idle ≥ 11 s)"),
        (bystander, "alone", "bystander alone"),
        (bystander, "under_load", "bystander, target under uncached load"),
    ):
        t = series.get(key, {})
        if t:
            d = t.get("ttfb_ms", {})
            rows.append(
                [label, f"{t.get('ok')}/{t.get('n')}"]
                + [_fmt(d.get(k), "", 1) for k in ("p50", "p95", "max")]
                + [_fmt(t.get("total_ms", {}).get("p50"), "", 1)]
            )
    md += _table(["TTFB, home page", "200/asked", "p50 ms", "p95 ms", "max ms", "whole answer p50 ms"], rows)
    loads = []
    for key, label in (
        ("uncached", "uncached `/?bench=load`"),
        ("cached", "cached `/`"),
        ("cached_identity", "cached `/`, no Accept-Encoding"),
        ("cached_direct", "cached `/`, to Caddy's address (no docker-proxy)"),
    ):
        run = section.get(key)
        if run:
            loads.append((label, run))
    if bystander.get("target_load"):
        loads.append(("uncached, bystander measured meanwhile", bystander["target_load"]))
    for mode in section.get("opcache", {}).get("modes", []):
        loads.append((f"uncached, opcache {mode['mode']}", mode.get("load", {})))
    rows = []
    for label, run in loads:
        lat = run.get("latency_ms", {})
        cpu = run.get("cpu", {})
        hit = run.get("hit_ratio")
        rows.append(
            [
                label,
                f"{run.get('connections')} × {run.get('seconds')} s",
                _fmt(run.get("requests_per_s"), "", 0),
                " / ".join(_fmt(lat.get(k), "", 1) for k in ("50", "99", "max")),
                ", ".join(f"{k}: {v}" for k, v in sorted(run.get("statuses", {}).items())) or run.get("error", "–"),
                "–" if hit is None else f"{hit * 100:.1f} %",
                _fmt(cpu.get(php, {}).get("cpus_mean"), "", 2),
                _fmt(cpu.get(nginx, {}).get("cpus_mean"), "", 2),
                _fmt(cpu.get(section.get("caddy", "caddy"), {}).get("cpus_mean"), "", 2),
                _fmt(cpu.get("wpfleet-mariadb", {}).get("cpus_mean"), "", 2),
                _fmt(cpu.get("docker-proxy :443", {}).get("cpus_mean"), "", 2),
                _fmt(
                    run.get("wrk_cpu_s") / run["seconds"] if run.get("wrk_cpu_s") and run.get("seconds") else None,
                    "",
                    2,
                ),
                _fmt(cpu.get("host", {}).get("cpus_mean"), "", 2) + f" of {cpu.get('host', {}).get('limit_cpus', '?')}",
            ]
        )
    md += [
        "Loads (wrk). CPU columns: mean CPUs used over the run, from each container's cgroup (MariaDB: during "
        "uncached loads only, it serves every site); *docker-proxy*: "
        "the lab's userland proxy that publishes Caddy's port on 127.0.0.1 (every loopback byte goes through it); "
        "*wrk*: the load generator's own CPU; *host*: the whole machine busy (/proc/stat), other work included:",
        "",
    ]
    md += _table(
        [
            "load",
            "connections × s",
            "req/s",
            "latency p50 / p99 / max ms",
            "statuses",
            "X-Cache HIT",
            "php CPUs",
            "nginx CPUs",
            "Caddy CPUs",
            "MariaDB CPUs",
            "docker-proxy CPUs",
            "wrk CPUs",
            "host CPUs busy",
        ],
        rows,
    )
    purge = section.get("purge", {})
    if purge.get("rows"):
        md += [
            f"Purge to fresh: post {purge.get('post_id')} renamed through the REST API (application password), "
            "the home page a cache HIT just before; the anonymous home page then asked again and again until "
            "the new title shows. Seconds to the end of the first fresh answer:",
            "",
        ]
        md += _table(
            ["#", "REST POST ms", "from its answer s", "from its start s", "stale answers", "fresh answer X-Cache"],
            [
                [
                    str(i + 1),
                    _fmt(r.get("post_ms"), "", 1),
                    _fmt(r.get("from_response_s"), "", 3),
                    _fmt(r.get("from_post_start_s"), "", 3),
                    str(r.get("stale_answers", "–")),
                    r.get("fresh_x_cache", r.get("error", "–")),
                ]
                for i, r in enumerate(purge["rows"])
            ],
        )
    if bystander.get("target_load"):
        cpu = bystander["target_load"].get("cpu", {})
        md += [
            "CPU of the target's PHP container while the bystander was measured (sampled every "
            f"{cpu.get(php, {}).get('interval_s')} s): {_cpu_line(cpu.get(php, {}))}.",
            "",
        ]
    modes = section.get("opcache", {}).get("modes", [])
    if modes:
        md += [
            "Opcache modes on the target (php.ini rewritten, file cache emptied, container restarted; the "
            "configured mode last). Memory of the PHP container after "
            f"{modes[0].get('idle_s_before_memory')} s idle, MB:",
            "",
        ]
        keys: list[tuple[str, str | None]] = [
            ("warm TTFB p50 / p95 ms", None),
            ("uncached req/s", None),
            ("cold-pool TTFB ms (one)", None),
            ("usage", "usage_mb"),
            ("no cache (docker stats)", "no_cache_docker_stats_mb"),
            ("usage − total_cache", "no_cache_total_cache_mb"),
            ("unreclaimable", "unreclaimable_mb"),
            ("rss", "rss_mb"),
            ("shmem", "shmem_mb"),
            ("cache", "cache_mb"),
            ("processes idle", None),
        ]
        rows = []
        for name, field in keys:
            row = [name]
            for mode in modes:
                mem = mode.get("memory_idle", {})
                if field:
                    row.append(_fmt(mem.get(field), "", 1))
                elif name.startswith("warm"):
                    row.append(_pp(mode.get("ttfb", {}).get("ttfb_ms", {}), 1))
                elif name.startswith("uncached"):
                    row.append(_fmt(mode.get("load", {}).get("requests_per_s"), "", 0))
                elif name.startswith("cold"):
                    row.append(_fmt(mode.get("cold_ttfb_ms"), "", 1))
                else:
                    row.append(str(mode.get("pids_idle")))
            rows.append(row)
        md += _table(["", *[m["mode"] for m in modes]], rows)
    return md


def _operations_markdown(section: dict) -> list[str]:
    summary = section.get("summary")
    if not summary:
        return []
    from bench.sections.operations import OPERATIONS, judge, met

    versions = section.get("php_versions", {})
    labels = {
        "suspend": "suspend, then 503 through Caddy",
        "resume": "resume, then 200 with the same `<title>`",
        "php_up": f"PHP {versions.get('from')} → {versions.get('to')}, then 200",
        "php_down": f"PHP {versions.get('to')} → {versions.get('from')}, then 200",
    }
    md = [
        "## 8. Day-two operations: suspend, resume, PHP version switch",
        "",
        f"{section.get('n')} sites created at once through the API ({_workers(section.get('workers', 0))}), "
        "then one site at a time: suspend, (all suspended) resume, PHP switch to "
        f"{versions.get('to')} and back to {versions.get('from')}, each through the bench's API, its job run "
        "by the worker cluster. *POST→DONE*: from just before the request to the job's `finished_at`; "
        "*→ verified*: to the end of the first request through Caddy after DONE that showed the result "
        "(includes the bench's 0.1 s poll of the job). Seconds:",
        "",
    ]
    targets = {r["op"]: r for r in judge(section)}
    rows = []
    for op in OPERATIONS:
        s = summary.get(op, {})
        if not s.get("n"):
            continue
        d = s["post_to_done_s"]
        target = targets.get(op)
        rows.append(
            [
                labels[op],
                f"{s['verified']}/{s['n']}",
                " / ".join(_fmt(d.get(k), "", 2) for k in ("p50", "p95", "max")),
                _pp(s.get("post_to_verified_s", {})),
                _pp(s.get("queue_wait_s", {}), 3),
                ", ".join(f"`{k}` {v.get('p50'):.2f}" for k, v in s.get("steps_s", {}).items() if v.get("n")) or "–",
                "–" if target is None else f"{met(target['pass'])} ({target['target']})",
            ]
        )
    md += _table(
        [
            "operation",
            "done and verified",
            "POST→DONE p50 / p95 / max",
            "→ verified p50 / p95",
            "queue wait p50 / p95",
            "steps p50",
            "target p50",
        ],
        rows,
    )
    memory = [m for m in section.get("memory", []) if "no_cache_mb" in m]
    if memory:
        md += [
            "Memory freed by a suspend, per site. *Containers*: the php and nginx containers' cgroup v1 memory "
            "(`/sys/fs/cgroup/memory/docker/<id>/`), read just before the suspend after a page view through Caddy "
            "(`/` and an uncached `/?opsview=1`, so php-fpm has a child): *no cache* = `memory.usage_in_bytes` − "
            "`total_inactive_file` (what `docker stats` shows), *raw* = usage with all page cache; the "
            "cgroups are gone once the containers stop, so all of it is released. *Host*: `MemAvailable` "
            "(`/proc/meminfo`, median of 3 readings) 1 s after the job is DONE minus just before the POST: it also "
            "counts what the cgroups do not (each container's containerd-shim, kernel memory outside the cgroup) "
            "and moves with everything else on the shared host, so one site's figure is noisy; page cache "
            "released by the stop barely changes it (MemAvailable already counts it as available). MB:",
            "",
        ]
        md += _table(
            [
                "site",
                "php no cache",
                "nginx no cache",
                "containers no cache",
                "containers raw",
                "php processes",
                "host MemAvailable gain",
                "cgroups gone",
            ],
            [
                [
                    f"`{m['site']}`",
                    _fmt(m.get("php_no_cache_mb"), "", 1),
                    _fmt(m.get("nginx_no_cache_mb"), "", 1),
                    _fmt(m.get("no_cache_mb"), "", 1),
                    _fmt(m.get("usage_mb"), "", 1),
                    str(m.get("php_processes", "–")),
                    _fmt(m.get("host_freed_mb"), "", 1),
                    "yes" if m.get("cgroups_gone_after") and all(m["cgroups_gone_after"].values()) else "NO",
                ]
                for m in memory
            ],
        )
    switches = section.get("php_up", []) + section.get("php_down", [])
    if switches:
        md += [
            "PHP switches under a probe: one thread asks the site through Caddy for an uncached page "
            "(`/?opsprobe=<n>`, PHP answers) one request after another, 50 ms apart, from 0.5 s before the PATCH "
            "to 1 s after the job is DONE; a failure is anything but a 200. *PHP after*: `PHP_VERSION` in the "
            "site's PHP container.",
            "",
        ]
        md += _table(
            ["site", "to", "POST→DONE s", "probe requests", "failed", "probe p50 / max ms", "PHP after"],
            [
                [
                    f"`{r.get('site')}`",
                    str(r.get("php_version")),
                    _fmt(r.get("post_to_done_s"), "", 2),
                    str(r.get("probe", {}).get("requests", "–")),
                    str(r.get("probe", {}).get("failures", "–"))
                    + (
                        " (" + "; ".join(r["probe"]["failure_examples"][:3]) + ")"
                        if r.get("probe", {}).get("failure_examples")
                        else ""
                    ),
                    " / ".join(_fmt(r.get("probe", {}).get("latency_ms", {}).get(k), "", 0) for k in ("p50", "max")),
                    str(r.get("php_reports", "–")),
                ]
                for r in switches
            ],
        )
    failed = [f for op in OPERATIONS for f in summary.get(op, {}).get("failed", [])]
    if failed:
        md += ["Failed or unverified:", ""] + [f"- `{f['site']}` {f['status']}: {f['error']}" for f in failed] + [""]
    return md


def _scale_memory_lines(levels: list[dict]) -> list[str]:
    """Where each level's memory per site went (meminfo fields' growth per site), and the VM's balloon."""
    rows = []
    for lv in levels:
        parts = lv.get("memory_breakdown_per_site_mb")
        if not parts:
            continue
        mem = lv.get("memory", {})
        rows.append(
            f"{lv.get('memory_sites', lv['existing']):,} sites: "
            + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
            + (
                f" (balloon {_fmt(mem.get('balloon_mb'), ' MB', 1)}, grown {_fmt(lv.get('memory_balloon_growth_mb'), ' MB', 1)};"
                if lv.get("memory_balloon_growth_mb") is not None
                else " (balloon not read;"
            )
            + f" drop in MemAvailable per site {_fmt(lv.get('memory_per_site_raw_mb'), ' MB', 2)};"
            + f" memory cgroups {mem.get('memory_cgroups', '–')}"
            # (not read before 228a2d4)
            + (f"; per-CPU free lists {_fmt(mem['pcp_free_mb'], ' MB', 0)})" if "pcp_free_mb" in mem else ")")
        )
    if not rows:
        return []
    # Runs before the per-CPU free lists were taken out of the figure (806123b and earlier) count them in it.
    pcp = any(lv.get("memory_pcp_growth_mb") is not None for lv in levels)
    return [
        "Memory per site, by /proc/meminfo field (MB a site, each field's growth since level 0"
        + (
            "; `pcp_free`: the growth of the free pages held on the per-CPU lists, which MemFree does not count"
            if pcp
            else ""
        )
        + "; `other`: what MemFree lost beyond these and the balloon; the per-site figure above is the drop in "
        "MemAvailable less the balloon's growth, pages the hypervisor took"
        + (", and less the per-CPU lists' growth" if pcp else ", the per-CPU lists' growth included (not read then)")
        + "): "
        + "; ".join(rows)
        + ".",
        "",
    ]


def _scale_idle_cpu_lines(levels: list[dict]) -> list[str]:
    """Each level's CPU with no site being built, by who used it."""
    rows = []
    for lv in levels:
        cpu = lv.get("idle_cpu")
        if not cpu or "by" not in cpu:
            continue
        window = cpu.get("window_s") or 0
        share = (cpu.get("busy_s", 0) / window / (cpu.get("cores") or 1) * 100) if window else 0
        rows.append(
            f"{lv['existing']:,} sites: {cpu.get('busy_s')} s busy in {window} s ({share:.0f} % of "
            f"{cpu.get('cores')} cores): " + ", ".join(f"{k} {v}" for k, v in cpu["by"].items() if v)
        )
    if not rows:
        return []
    # Runs before the kernel's threads were named (00bca99) count them in `rest`.
    named = any("kernel threads" in (lv.get("idle_cpu") or {}).get("by", {}) for lv in levels)
    legend = (
        "`kdamond`: the kernel's DAMON thread, which the VM's platform runs; `rest`: interrupts outside the "
        "kernel's threads, and processes not named"
        if named
        else "`rest`: the kernel's own threads and interrupts, and processes not named"
    )
    return [
        f"CPU seconds with no site being built (after the settle, housekeeping running; {legend}): "
        + "; ".join(rows)
        + ".",
        "",
    ]


def _scale_pressure_lines(levels: list[dict]) -> list[str]:
    """Each level's memory pressure while its POST→ACTIVE samples ran (older runs did not read it)."""
    rows = []
    for lv in levels:
        p = lv.get("samples_memory_pressure")
        if not p:
            continue
        rows.append(
            f"{lv['existing']:,} sites: some {p.get('some_share', 0) * 100:.1f} %, full "
            f"{p.get('full_share', 0) * 100:.1f} % of {p.get('window_s')} s, {p.get('refaults_per_s')} "
            f"refaults/s, {p.get('major_faults_per_s')} major faults/s"
        )
    if not rows:
        return []
    return [
        "Memory pressure while the POST→ACTIVE samples ran (`/proc/pressure/memory`: the share of the time some "
        "task, and every task, waited on memory; `workingset_refault_file`: evicted file pages read again; "
        "`pgmajfault`): " + "; ".join(rows) + ".",
        "",
    ]


def _scale_markdown(section: dict) -> list[str]:
    levels = section.get("levels", [])
    if not levels:
        return []
    settings = section.get("settings", {})
    md = [
        "## 9. Scale: real sites (issue #14)",
        "",
        f"Real sites built through the bench's API up to {section.get('fill'):,} "
        f"({_workers(section.get('workers', 0))}, {settings.get('in_flight')} unfinished at a time; the "
        "cluster's housekeeping running every minute), measured at each level in this order: a settle (at most "
        f"{settings.get('cron_settle_s')} s until every site had its first cron run and no job of the panel's "
        f"was open); the host's CPU over {settings.get('idle_cpu_s', '–')} s with no site being built; at level "
        "0, the empty host's memory, then one warm-up site, not counted; "
        f"{settings.get('samples_per_level')} new sites one at a time (POST→ACTIVE; they stay); every site asked "
        "for `/` through Caddy; host memory (`sync`, `drop_caches`, "
        f"{settings.get('memory_settle_s')} s, `MemAvailable`; per site = the drop since level 0, less the VM "
        f"balloon's growth and (where read) the per-CPU free lists', / the sites then, the samples' included); {settings.get('reload_samples')} Caddy reloads "
        "(`docker exec`); "
        f"{settings.get('reconcile_samples')} reconciler passes (`manage.py reconcile --json`: the pass's own "
        f"wall and CPU); {settings.get('api_requests')} × GET /api/sites and GET /api/sites/<name>. The panel's "
        f"WPFLEET_MAX_SITES: {section.get('max_sites', '?')}. Seconds unless said:",
        "",
    ]
    rows = []
    for lv in levels:
        fill, rec, api = lv.get("fill", {}), lv.get("reconcile", {}), lv.get("api", {})
        views = lv.get("page_views", {})
        rows.append(
            [
                f"{lv['level']:,}" + (" (partial)" if lv.get("partial") else ""),
                f"{lv['existing']:,}",
                f"{fill.get('built', 0)} in {_fmt(fill.get('seconds'), '', 0)} ({_fmt(fill.get('sites_per_min'), '/min', 1)})"
                + (f", {fill['failed']} failed" if fill.get("failed") else ""),
                _pp(lv.get("post_to_active", {}))
                + f" (n={lv.get('post_to_active', {}).get('n', 0)})"
                + (
                    f", {lv['added_post_to_active_p50_s']:+.2f}"
                    if lv.get("added_post_to_active_p50_s") is not None and lv["existing"]
                    else ""
                ),
                _pp(lv.get("caddy_reload", {}).get("seconds", {}), 3),
                f"{_fmt(rec.get('wall_s', {}).get('max'), '', 2)} / {_fmt(rec.get('cpu_s', {}).get('max'), '', 2)}"
                + (" (error)" if rec.get("error") else ""),
                f"{_fmt(lv.get('memory', {}).get('mem_available_mb'), '', 0)} / {_fmt(lv.get('memory_per_site_mb'), '', 1)}",
                f"{views.get('ok', '–')}/{views.get('n', '–')}, p50 {_fmt(views.get('latency_s', {}).get('p50'), '', 2)}",
                _pp(api.get("list", {}).get("latency_s", {}), 3),
                _pp(api.get("detail", {}).get("latency_s", {}), 3),
            ]
        )
    md += _table(
        [
            "level",
            "existing",
            "fill: built in s (rate)",
            "POST→ACTIVE p50 / p95, added vs 0",
            "Caddy reload p50 / p95",
            "reconcile wall / CPU (max)",
            "MemAvailable MB / per site MB",
            "page views ok, p50",
            "GET list p50 / p95",
            "GET detail p50 / p95",
        ],
        rows,
    )
    res = [lv.get("resources", {}) for lv in levels]
    md += [
        "Resources at each level (the bench's, by owner label): "
        + "; ".join(
            f"{lv['existing']:,} sites: {r.get('bench_containers')} containers, {r.get('bench_networks')} networks, "
            f"{r.get('bench_volumes')} volumes ({r.get('host_containers_running')} containers running on the host)"
            for lv, r in zip(levels, res, strict=True)
        )
        + ".",
        "",
    ]
    md += _scale_memory_lines(levels) + _scale_idle_cpu_lines(levels) + _scale_pressure_lines(levels)
    if section.get("levels_skipped"):
        md += [f"Levels not reached: {', '.join(str(x) for x in section['levels_skipped'])}.", ""]
    stopped = section.get("stopped")
    if stopped:
        details = ", ".join(f"{k} {v}" for k, v in stopped.items() if k not in ("reason", "existing"))
        md += [
            f"Filling stopped: **{stopped.get('reason')}** at {stopped.get('existing')} sites"
            + (f" ({details})" if details else "")
            + ". The levels above were not measured; the last one was measured at the count reached.",
            "",
        ]
    capacity = section.get("capacity")
    if capacity:
        md += [
            f"Refused past capacity at {capacity.get('existing')} sites: HTTP {capacity.get('status')} "
            f"`{json.dumps(capacity.get('body'))[:300]}` (resource `{capacity.get('resource')}`; "
            f"{'a row was left for the refused site' if capacity.get('row_left') else 'nothing left for the refused site'}).",
            "",
        ]
    failed = section.get("failed", [])
    if failed:
        md += [f"Fill sites that failed ({len(failed)}):", ""]
        md += [f"- `{f['site']}` at level {f.get('level')}, {f.get('status')}: {f.get('error')}" for f in failed[:50]]
        md += [""]
    sample_failures = [f for lv in levels for f in lv.get("summary", {}).get("failed", [])]
    if sample_failures:
        md += ["POST→ACTIVE samples that failed:", ""]
        md += [f"- `{f['site']}` {f.get('status')}: {f.get('error')}" for f in sample_failures] + [""]
    view_failures = [(lv["existing"], f) for lv in levels for f in lv.get("page_views", {}).get("failures", [])]
    if view_failures:
        md += ["Page views that did not answer 200:", ""]
        md += [f"- at {n}: `{f['host']}` {f['status']} {f.get('error', '')}" for n, f in view_failures[:30]] + [""]
    for key in ("restart", "power_cut"):
        md += _restart_lines(section.get(key) or {}, settings)
    delete = section.get("delete", {})
    if delete.get("n"):
        md += [
            f"Deleted at the end through the API (8 requests in flight, no final backup): {delete['n']} sites in "
            f"{delete.get('seconds')} s, DELETE→row gone p50 "
            f"{_fmt(delete.get('deprovision_s', {}).get('p50'), ' s', 2)}; left over: {len(delete.get('leftover', []))}.",
            "",
        ]
    if section.get("jobs"):
        md += [
            "Jobs the panel ran during the section: "
            + ", ".join(f"{k}: {v}" for k, v in section["jobs"].items())
            + ".",
            "",
        ]
    return md
