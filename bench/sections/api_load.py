"""Section 3: API latency of POST and GET /api/sites under many concurrent clients.

No worker cluster runs, so nothing is provisioned: the rows (sites, jobs,
queued tasks) are deleted through the ORM afterwards; no Docker resource
exists for them. Each client has its own user and token, as separate API
users would, and as the per-user throttle (WPFLEET_API_RATE) expects.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from bench import cleanup, measure
from bench.api import Api, Call
from bench.sections import Context, timed
from bench.stats import dist


def _closed_loop(clients: list[Api], requests_each: int, call) -> list[dict]:
    """Each client sends its requests back to back; all clients start together."""
    barrier = threading.Barrier(len(clients))
    t0 = time.time()

    def client_loop(index: int) -> list[dict]:
        api = clients[index]
        barrier.wait()
        out = []
        for _ in range(requests_each):
            result: Call = call(api)
            out.append(
                {
                    "client": index,
                    "t_s": round(result.started_at - t0, 4),
                    "latency_s": round(result.latency_s, 5),
                    "status": result.status,
                    "bytes": result.nbytes,
                }
            )
        return out

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        return [row for rows in pool.map(client_loop, range(len(clients))) for row in rows]


def _summary(rows: list[dict], ok_status: int) -> dict:
    ok = [r["latency_s"] for r in rows if r["status"] == ok_status]
    span = max((r["t_s"] + r["latency_s"] for r in rows), default=0) - min((r["t_s"] for r in rows), default=0)
    return {
        "requests": len(rows),
        "ok": len(ok),
        "status": dict(Counter(str(r["status"]) for r in rows)),
        "latency_s": dist(ok, digits=4),
        "requests_per_s": round(len(rows) / span, 1) if span > 0 else None,
    }


def _delete_rows(names: list[str]) -> dict:
    """Rows only: sites, their jobs and steps, and the queued tasks no cluster will ever run."""
    from django_q.models import OrmQ

    from jobs.models import Job
    from sites.models import Site

    sites = Site.objects.filter(name__in=names).delete()[0]
    jobs = Job.objects.filter(subject_name__in=names).delete()[0]
    # No cluster runs and every earlier job has finished: all queued tasks are these.
    queued = OrmQ.objects.all().delete()[0]
    cleanup.REGISTRY.difference_update(names)
    return {"sites": sites, "jobs_and_steps": jobs, "queued_tasks": queued}


@timed
def run(ctx: Context) -> dict:
    from sites.models import Site

    plan = ctx.plan
    ctx.panel.stop_cluster()
    clients = [Api(token) for token in ctx.panel.tokens(plan.api_clients, prefix="apiclient")]
    names = [measure.new_name() for _ in range(plan.api_clients * plan.api_requests_per_client + 5)]
    cleanup.REGISTRY.update(names)
    pending = iter(names)
    lock = threading.Lock()

    def post(api: Api) -> Call:
        with lock:
            name = next(pending)
        return api.create_site(name)

    # Not counted as load: one client alone first, to tell a request's own cost from queueing.
    baseline_n = 5
    try:
        post_alone = _closed_loop(clients[:1], baseline_n, post)
        post_rows = _closed_loop(clients, plan.api_requests_per_client, post)
        listed = Site.objects.count()
        # GET after the POSTs: the first page (100) of the sites just created.
        get_alone = _closed_loop(clients[:1], baseline_n, lambda api: api.list_sites())
        get_rows = _closed_loop(clients, plan.api_requests_per_client, lambda api: api.list_sites())
    finally:
        deleted = _delete_rows(names)
    return {
        "clients": plan.api_clients,
        "requests_per_client": plan.api_requests_per_client,
        "sites_listed": listed,
        "post": _summary(post_rows, 202),
        "get": _summary(get_rows, 200),
        "alone": {"post": _summary(post_alone, 202), "get": _summary(get_alone, 200)},
        "deleted_rows": deleted,
        "samples": {"post": post_rows, "get": get_rows},
    }
