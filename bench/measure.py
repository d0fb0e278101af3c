"""Creating sites through the API and reading what each job recorded.

POST→ACTIVE runs from just before the POST is sent (this process's clock) to
the job's finished_at, which the worker sets in the same transaction that
marks the site ACTIVE; both clocks are this host's. Per-step times come from
the JobStep rows of the job's last attempt.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench import cleanup
from bench.api import Api
from bench.stats import critical_path, dist, step_needs

POLL_SECONDS = 0.1


def new_name() -> str:
    """`b` + random hex: valid ([a-z0-9]{1,32}) and never a name someone else uses."""
    return "b" + secrets.token_hex(6)


@dataclass
class Posted:
    site: str
    posted_at: float
    status: int
    latency_s: float
    job_id: int | None
    error: str = ""
    # The answer's JSON when the POST was refused (a 507's {"code": "capacity", "resource": ...}).
    body: dict | None = None


def post_one(api: Api, name: str) -> Posted:
    call = api.create_site(name)
    job_id = None
    if call.status == 202 and isinstance(call.body, dict):
        job_id = (call.body.get("job") or {}).get("id")
    error = "" if call.status == 202 else (call.error or str(call.body)[:300])
    refused = call.body if call.status != 202 and isinstance(call.body, dict) else None
    return Posted(name, call.started_at, call.status, call.latency_s, job_id, error, refused)


def post_all(api: Api, names: list[str]) -> list[Posted]:
    """POST every name at the same moment (one thread each, released together)."""
    barrier = threading.Barrier(len(names))

    def fire(name: str) -> Posted:
        barrier.wait()
        return post_one(api, name)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(fire, names))


def crashed_tasks(job_ids: set[int] | list[int]) -> dict[int, str]:
    """Jobs whose django-q2 task raised: the runner itself broke, outside the job's own error handling.

    Such a job stays PROCESSING until its lease expires; waiting for it would
    only burn the batch timeout.
    """
    from django_q.models import Failure

    names = {f"job-{pk}": pk for pk in job_ids}
    crashed = {}
    for name, result in Failure.objects.filter(name__in=list(names)).values_list("name", "result"):
        lines = [line for line in str(result).splitlines() if line.strip()]
        crashed[names[name]] = (lines[0] if lines else "task failed")[:300]
    return crashed


def wait_jobs(job_ids: list[int], timeout: float) -> bool:
    """Wait until every job is DONE, finally FAILED, or its task crashed; False on timeout."""
    from jobs.models import Job

    pending = set(job_ids)
    deadline = time.monotonic() + timeout
    checked_crashes = time.monotonic()
    while pending:
        rows = Job.objects.filter(pk__in=pending).values_list("pk", "status")
        for pk, status in rows:
            if status in Job.FINAL:
                pending.discard(pk)
        if pending and time.monotonic() - checked_crashes > 1.0:
            pending -= set(crashed_tasks(pending))
            checked_crashes = time.monotonic()
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _seconds(later, earlier) -> float | None:
    if later is None or earlier is None:
        return None
    return round(later - earlier, 4)


def sample(posted: Posted, needs: dict[str, set[str]] | None = None) -> dict:
    """Everything measured about one site's creation, from its POST and its job's rows."""
    from jobs.models import Job, JobStep

    record: dict = {
        "site": posted.site,
        "job_id": posted.job_id,
        "post_status": posted.status,
        "post_latency_s": round(posted.latency_s, 4),
        "posted_at": round(posted.posted_at, 4),
        "status": "POST_FAILED" if posted.job_id is None else None,
        "error": posted.error,
    }
    if posted.job_id is None:
        if posted.body is not None:
            record["post_body"] = posted.body
        return record
    job = Job.objects.get(pk=posted.job_id)
    created = job.created_at.timestamp()
    started = job.started_at.timestamp() if job.started_at else None
    finished = job.finished_at.timestamp() if job.finished_at else None
    done = job.status == Job.Status.DONE
    record.update(
        {
            "status": job.status,
            "attempts": job.attempts,
            "error": job.error[:300],
            "active_at": round(finished, 4) if done and finished is not None else None,
            "post_to_active_s": _seconds(finished, posted.posted_at) if done else None,
            # The POST until the job row exists (validation, the insert transaction).
            "accept_s": _seconds(created, posted.posted_at),
            # Until a worker claimed it: broker poll, busy workers. A retried job's
            # started_at is its last attempt's, so this then includes the failed ones.
            "queue_wait_s": _seconds(started, created),
            "wall_s": _seconds(finished, started),
        }
    )
    spans = {}
    for step in JobStep.objects.filter(job=job, phase=JobStep.Phase.APPLY, attempt=job.attempts):
        if step.finished_at is not None:
            spans[step.name] = (step.started_at.timestamp(), step.finished_at.timestamp())
    if job.status != Job.Status.DONE and not record["error"]:
        record["error"] = crashed_tasks([job.pk]).get(job.pk, "not finished within the batch timeout")
    record["steps"] = {
        name: {"start_s": round(begin - posted.posted_at, 4), "duration_s": round(end - begin, 4)}
        for name, (begin, end) in sorted(spans.items(), key=lambda item: item[1][0])
    }
    if done:
        path = critical_path(spans, needs or step_needs())
        on_path = sum(spans[name][1] - spans[name][0] for name in path)
        record["critical_path"] = path
        record["critical_path_s"] = round(on_path, 4)
        # What the chain of steps does not explain: recording steps, claiming, marking done.
        record["overhead_s"] = round(record["wall_s"] - on_path, 4) if record["wall_s"] is not None else None
    return record


def provision_sequential(api: Api, n: int, timeout: float) -> list[dict]:
    """Create n sites one at a time: each POST waits for the previous site to be ACTIVE."""
    needs = step_needs()
    samples = []
    for _ in range(n):
        posted = post_one(api, new_name())
        cleanup.REGISTRY.add(posted.site)
        if posted.job_id is not None:
            wait_jobs([posted.job_id], timeout)
        samples.append(sample(posted, needs))
    return samples


def provision_batch(api: Api, n: int, timeout: float) -> list[dict]:
    """POST n sites at once and wait until all are ACTIVE (or finally failed)."""
    names = [new_name() for _ in range(n)]
    cleanup.REGISTRY.update(names)
    posted = post_all(api, names)
    wait_jobs([p.job_id for p in posted if p.job_id is not None], timeout)
    needs = step_needs()
    return [sample(p, needs) for p in posted]


def delete_sites(api: Api, names: list[str], timeout: float) -> dict:
    """DELETE every site, wait until the workers have removed them; force-remove what is left."""
    from jobs.models import Job, JobStep
    from sites.models import Site

    if not names:
        return {"n": 0}
    started = time.monotonic()
    deadline = started + timeout

    def delete(name: str) -> int:
        # 409 busy: a job of the site, or the reconciler repairing it, holds it
        # for the moment; a client asks again, as the API's docs say.
        while True:
            status = api.delete_site(name).status
            if status != 409 or time.monotonic() >= deadline:
                return status
            time.sleep(POLL_SECONDS * 2)

    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        statuses = Counter(pool.map(delete, names))
    while Site.objects.filter(name__in=names).exists() and time.monotonic() < deadline:
        # Rows left with no deprovisioning open (failed for good: the engine down...): nothing will remove them.
        deprovisioning = Job.objects.filter(subject_name__in=names, type=Site.JobType.DEPROVISION, status__in=Job.OPEN)
        if not deprovisioning.exists():
            break
        time.sleep(POLL_SECONDS * 2)
    leftover = sorted(Site.objects.filter(name__in=names).values_list("name", flat=True))
    jobs = Job.objects.filter(subject_name__in=names, type=Site.JobType.DEPROVISION, status=Job.Status.DONE)
    durations = [(job.finished_at - job.created_at).total_seconds() for job in jobs if job.finished_at]
    undo: dict[str, list[float]] = {}
    for step in JobStep.objects.filter(job__in=jobs, phase=JobStep.Phase.UNDO, finished_at__isnull=False):
        if step.duration is not None:
            undo.setdefault(step.name, []).append(step.duration.total_seconds())
    result = {
        "n": len(names),
        "delete_status": dict(statuses),
        "seconds": round(time.monotonic() - started, 3),
        # DELETE to row gone, and each undo step (they run one after another, in reverse).
        "deprovision_s": dist(durations),
        "undo_steps_s": {name: dist(v) for name, v in undo.items()},
        "leftover": leftover,
    }
    if leftover:
        # A stuck or busy site: remove it here rather than leak it into the next measurement.
        result["force_removed"] = cleanup.force_remove(leftover)
    cleanup.REGISTRY.difference_update(set(names) - set(leftover))
    return result


def summarize(samples: list[dict]) -> dict:
    """Distributions over a batch, the per-step breakdown, and what dominates the critical path."""
    ok = [s for s in samples if s.get("status") == "DONE"]
    from sites.provisioning.steps import STEP_NAMES

    seen = {name for s in ok for name in s.get("steps", {})}
    step_names = [name for name in STEP_NAMES if name in seen]
    summary: dict = {
        "n": len(samples),
        "active": len(ok),
        "failed": [
            {"site": s["site"], "status": s.get("status"), "error": s.get("error")}
            for s in samples
            if s.get("status") != "DONE"
        ],
        "retried": sum(1 for s in ok if s.get("attempts", 1) > 1),
    }
    for key in (
        "post_to_active_s",
        "post_latency_s",
        "accept_s",
        "queue_wait_s",
        "wall_s",
        "critical_path_s",
        "overhead_s",
    ):
        summary[key] = dist(s.get(key) for s in ok)
    summary["steps"] = {
        name: dist(s["steps"][name]["duration_s"] for s in ok if name in s["steps"]) for name in step_names
    }
    # Mean seconds each step adds to the critical path (0 for a site where it is off the path).
    contribution: Counter = Counter()
    chains: Counter = Counter()
    for s in ok:
        chains[" > ".join(s.get("critical_path", []))] += 1
        for name in s.get("critical_path", []):
            contribution[name] += s["steps"][name]["duration_s"]
    summary["critical_path_mean_s"] = {name: round(total / len(ok), 3) for name, total in contribution.most_common()}
    summary["critical_paths"] = dict(chains.most_common())
    if ok:
        first_post = min(s["posted_at"] for s in samples)
        last_active = max(s["active_at"] for s in ok)
        makespan = last_active - first_post
        summary["makespan_s"] = round(makespan, 3)
        summary["sites_per_min"] = round(len(ok) / makespan * 60, 2) if makespan > 0 else None
    return summary
