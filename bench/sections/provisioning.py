"""Sections 1 and 2: POST→ACTIVE one at a time, and batches posted at once with 1, 2, 4 workers."""

from __future__ import annotations

from bench import measure
from bench.sections import Context, timed


@timed
def sequential(ctx: Context) -> dict:
    """N sites one at a time (each POST after the previous site is ACTIVE)."""
    plan = ctx.plan
    ctx.panel.ensure_cluster(plan.workers)
    n = plan.sequential_n
    samples = measure.provision_sequential(ctx.api, n, plan.batch_timeout(1))
    deleted = measure.delete_sites(ctx.api, [s["site"] for s in samples], plan.batch_timeout(n))
    return {
        "n": n,
        "workers": plan.workers,
        "summary": measure.summarize(samples),
        "samples": samples,
        "delete": deleted,
    }


@timed
def concurrent(ctx: Context) -> dict:
    """Batches posted at once; each on a cluster of the given size, sites deleted after each."""
    plan = ctx.plan
    runs = []
    for n, workers in plan.concurrent_runs:
        ctx.panel.ensure_cluster(workers)
        samples = measure.provision_batch(ctx.api, n, plan.batch_timeout(n))
        deleted = measure.delete_sites(ctx.api, [s["site"] for s in samples], plan.batch_timeout(n))
        summary = measure.summarize(samples)
        runs.append({"n": n, "workers": workers, "summary": summary, "samples": samples, "delete": deleted})
        print(
            f"  concurrent N={n} workers={workers}: {summary['active']}/{n} ACTIVE, "
            f"{summary.get('sites_per_min')} sites/min, p50 {summary['post_to_active_s'].get('p50')} s",
            flush=True,
        )
    return {"runs": runs}
