"""PNG plots of latest.json (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

# The provisioner's steps in their order (sites.provisioning.steps.STEP_NAMES,
# not imported: --report-only draws without Django). Steps found in the
# samples and not listed here (older results) are drawn after these.
STEP_ORDER = [
    "database",
    "volume",
    "network",
    "php",
    "nginx",
    "nginx_config",
    "wordpress",
    "route",
    "live_check",
]


def step_labels(samples: list[dict]) -> list[str]:
    """The steps the samples have, in provisioning order."""
    seen = {name for s in samples for name in s.get("steps", {})}
    return [n for n in STEP_ORDER if n in seen] + sorted(seen - set(STEP_ORDER))


def workers(n: int) -> str:
    return f"{n} worker" + ("" if n == 1 else "s")


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def steps_boxplot(results: dict, out: Path) -> str | None:
    """Per-step durations, one at a time vs at once: which steps cost what."""
    sections = results["sections"]
    batches = []
    if "samples" in sections.get("sequential", {}):
        batches.append(("one at a time", sections["sequential"]["samples"]))
    runs = sections.get("concurrent", {}).get("runs", [])
    if runs:
        run = max(runs, key=lambda r: (r["n"] == 20 and r["workers"] == 4, r["n"], r["workers"]))
        batches.append((f"N={run['n']} at once, {run['workers']}w", run["samples"]))
    if not batches:
        return None
    fig, ax = plt.subplots(figsize=(10, 5.5))
    labels = ["queue"] + step_labels([s for _, samples in batches for s in samples]) + ["wall", "POST→ACTIVE"]
    width = 0.8 / len(batches)
    for b, (name, samples) in enumerate(batches):
        ok = [s for s in samples if s.get("status") == "DONE"]
        data = []
        for label in labels:
            if label == "queue":
                data.append([s["queue_wait_s"] for s in ok])
            elif label == "wall":
                data.append([s["wall_s"] for s in ok])
            elif label == "POST→ACTIVE":
                data.append([s["post_to_active_s"] for s in ok])
            else:
                data.append([s["steps"][label]["duration_s"] for s in ok if label in s["steps"]])
        # Log scale below: sub-10 ms steps and 20 s queue waits on one axis.
        data = [[max(v, 0.001) for v in values] or [0.001] for values in data]
        positions = [i + (b - (len(batches) - 1) / 2) * width for i in range(len(labels))]
        bp = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            vert=False,
            patch_artist=True,
            manage_ticks=False,
            showfliers=True,
        )
        color = f"C{b}"
        for patch in bp["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.5)
        ax.plot([], [], color=color, linewidth=8, alpha=0.5, label=name)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log)")
    ax.set_title("Provisioning: per-step durations (steps overlap; wall = claim→done)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, out, "steps.png")


def timeline(results: dict, out: Path) -> str | None:
    """Gantt chart of the median one-at-a-time site: how the steps overlap."""
    samples = [s for s in results["sections"].get("sequential", {}).get("samples", []) if s.get("status") == "DONE"]
    if not samples:
        return None
    samples.sort(key=lambda s: s["post_to_active_s"])
    site = samples[len(samples) // 2]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    path = set(site.get("critical_path", []))
    rows = [("POST→job row", 0.0, site["accept_s"]), ("queue wait", site["accept_s"], site["queue_wait_s"])]
    rows += [(name, step["start_s"], step["duration_s"]) for name, step in site["steps"].items()]
    for i, (name, start, duration) in enumerate(rows):
        color = "C3" if name in path else ("C7" if i < 2 else "C0")
        ax.barh(i, duration, left=start, color=color, alpha=0.8)
        ax.text(start + duration + 0.02, i, f"{duration:.2f}", va="center", fontsize=8)
    ax.axvline(site["post_to_active_s"], color="k", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since POST")
    ax.set_title(
        f"Median site one at a time ({site['site']}): {site['post_to_active_s']:.2f} s to ACTIVE; red = critical path"
    )
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out, "timeline.png")


def concurrent(results: dict, out: Path) -> str | None:
    """Sites ACTIVE over time for each batch, and throughput by worker count."""
    runs = results["sections"].get("concurrent", {}).get("runs", [])
    if not runs:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for run in runs:
        samples = run["samples"]
        t0 = min(s["posted_at"] for s in samples)
        done = sorted(s["active_at"] - t0 for s in samples if s.get("active_at"))
        left.step([0] + done, range(len(done) + 1), where="post", label=f"N={run['n']}, {workers(run['workers'])}")
    left.set_xlabel("seconds since the POSTs")
    left.set_ylabel("sites ACTIVE")
    left.set_title("Sites posted at once")
    left.grid(alpha=0.3)
    left.legend()
    rates = [(f"N={r['n']}\n{r['workers']}w", r["summary"].get("sites_per_min") or 0) for r in runs]
    right.bar([r[0] for r in rates], [r[1] for r in rates], color="C2")
    right.axhline(20, color="C3", linestyle="--", linewidth=1, label="target 20/min")
    right.set_ylabel("sites per minute")
    right.set_title("Throughput")
    right.legend()
    return _save(fig, out, "concurrent.png")


def api_latency(results: dict, out: Path) -> str | None:
    api = results["sections"].get("api", {})
    if "samples" not in api:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for verb, key, ok in (("POST /api/sites", "post", 202), ("GET /api/sites", "get", 200)):
        values = sorted(r["latency_s"] * 1000 for r in api["samples"][key] if r["status"] == ok)
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=verb)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"API latency, {api['clients']} concurrent clients ({api['sites_listed']} sites listed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, out, "api_latency.png")


def fill(results: dict, out: Path) -> str | None:
    """A new site as the host fills: POST→ACTIVE, and the two steps that deal with Caddy."""
    levels = results["sections"].get("fill", {}).get("levels", [])
    if not levels:
        return None
    x = [lv["existing"] for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(x, [lv["post_to_active"].get("p50") for lv in levels], marker="o", label="p50")
    left.plot(x, [lv["post_to_active"].get("max") for lv in levels], marker="x", linestyle=":", label="max")
    left.set_xlabel("existing sites (filler routes)")
    left.set_ylabel("seconds")
    left.set_ylim(bottom=0)
    left.set_title("A new site: POST→ACTIVE")
    left.grid(alpha=0.3)
    left.legend()
    for step, marker in (("route", "s"), ("live_check", "^")):
        right.plot(
            x,
            [lv.get("summary", {}).get("steps", {}).get(step, {}).get("p50") for lv in levels],
            marker=marker,
            label=f"{step} step p50",
        )
    right.set_xlabel("existing sites (filler routes)")
    right.set_ylabel("seconds")
    right.set_ylim(bottom=0)
    right.set_title("Its steps that deal with Caddy")
    right.grid(alpha=0.3)
    right.legend()
    return _save(fig, out, "fill.png")


def density(results: dict, out: Path) -> str | None:
    rows = results["sections"].get("density", {}).get("idle", [])
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r["site"] for r in rows]
    php = [r["php_no_cache_mb"] for r in rows]
    nginx = [r["nginx_no_cache_mb"] for r in rows]
    ax.bar(names, php, label="php-fpm (no cache)", color="C0")
    ax.bar(names, nginx, bottom=php, label="nginx (no cache)", color="C1")
    ax.scatter(
        names, [r["usage_mb"] for r in rows], color="k", marker="_", s=300, label="raw usage (with cache)", zorder=3
    )
    ax.axhline(25, color="C3", linestyle="--", linewidth=1, label="target 25 MB")
    ax.set_ylabel("MB")
    ax.set_title("Idle memory per site (php + nginx)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8)
    return _save(fig, out, "density.png")


def scale(results: dict, out: Path) -> str | None:
    """Issue #14: a new site, memory, the reconciler, a reload and the API as real sites fill the host."""
    levels = results["sections"].get("scale", {}).get("levels", [])
    if not levels:
        return None
    x = [lv["existing"] for lv in levels]

    def get(lv: dict, *keys: str):
        value = lv
        for key in keys:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return None if value == {} else value

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    ax.plot(x, [get(lv, "post_to_active", "p50") for lv in levels], marker="o", label="p50")
    ax.plot(x, [get(lv, "post_to_active", "p95") for lv in levels], marker="x", linestyle=":", label="p95")
    ax.set_title("A new site: POST→ACTIVE (s)")
    ax = axes[0][1]
    ax.plot(
        x, [get(lv, "memory_per_site_mb") for lv in levels], marker="o", color="C2", label="MemAvailable drop / site"
    )
    ax.axhline(20, color="C3", linestyle="--", linewidth=1, label="target 20 MB")
    ax.set_title("Host memory per site (MB)")
    ax = axes[1][0]
    ax.plot(x, [get(lv, "reconcile", "cpu_s", "max") for lv in levels], marker="o", label="reconcile CPU (max)")
    ax.plot(x, [get(lv, "reconcile", "wall_s", "max") for lv in levels], marker="s", label="reconcile wall (max)")
    ax.plot(x, [get(lv, "caddy_reload", "seconds", "p50") for lv in levels], marker="^", label="Caddy reload p50")
    ax.axhline(5, color="C3", linestyle="--", linewidth=1, label="target 5 s CPU")
    ax.set_title("Reconciler pass, Caddy reload (s)")
    ax = axes[1][1]
    ax.plot(x, [get(lv, "api", "list", "latency_s", "p50") for lv in levels], marker="o", label="GET /api/sites p50")
    ax.plot(
        x,
        [get(lv, "api", "detail", "latency_s", "p50") for lv in levels],
        marker="s",
        label="GET /api/sites/<name> p50",
    )
    ax.set_title("API latency (s)")
    for ax in (a for row in axes for a in row):
        ax.set_xlabel("existing sites (real)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out, "scale.png")


PLOTS: list[Callable[[dict, Path], str | None]] = [
    steps_boxplot,
    timeline,
    concurrent,
    api_latency,
    fill,
    density,
    scale,
]


def draw_all(results: dict, out: Path) -> tuple[list[str], list[str]]:
    """Every plot the results allow; returns (files written, errors). A broken plot never loses the results."""
    files, errors = [], []
    for plot in PLOTS:
        try:
            name = plot(results, out)
            if name:
                files.append(name)
        except Exception as exc:
            plt.close("all")
            errors.append(f"{plot.__name__}: {exc.__class__.__name__}: {exc}")
    return files, errors
