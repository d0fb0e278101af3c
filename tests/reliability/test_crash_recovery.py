"""A worker killed in the middle of any step: the job is taken over, counts the dead
attempt, and ends; the site is whole and serving, or, if every attempt dies, nothing is left.

The kill is the product's crash drill (WPFLEET_CRASH_DURING, in
sites.provisioning.orchestrator): the worker process SIGKILLs itself once the
named step's RUNNING record is committed, either as the step's apply starts
("php@1") or once its apply has returned and before its OK is recorded
("php@done@1": the step's work is done and no record says so). So each case
dies exactly in the step it names.
"""

from __future__ import annotations

import signal

import pytest
from django.conf import settings
from django.utils import timezone

from jobs.models import Job, JobStep
from jobs.queue import enqueue
from sites.models import Site
from sites.models.naming import SiteNames
from sites.provisioning.steps import OK, PROVISION_STEPS, STEP_NAMES, Context, View, observe_site, step_named
from sites.services import create_site, delete_site
from tests.conftest import unique_name
from tests.integration.conftest import (
    SHARED_COMPILED_CORE,
    fetch,
    force_remove,
    leftovers,
    process_alive,
    start_cluster,
    stop_cluster,
    wait_for,
    worker_pid,
)
from tests.reliability.conftest import injected

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(300)]

LEASE = "5"


def prerequisites(name: str) -> set[str]:
    """Every step that must be done before ``name`` starts (its needs, transitively)."""
    found: set[str] = set()
    todo = list(step_named(name).needs)
    while todo:
        need = todo.pop()
        if need not in found:
            found.add(need)
            todo.extend(step_named(need).needs)
    return found


def dependents(name: str) -> set[str]:
    """Every step that cannot start before ``name`` is done."""
    return {step.name for step in PROVISION_STEPS if name in prerequisites(step.name)}


def wait_for_drill_kill(job_id: int, step: str, attempt: int) -> Job:
    """Wait until the worker running ``attempt`` of the job has started ``step`` and is dead."""
    wait_for(
        lambda: JobStep.objects.filter(job_id=job_id, attempt=attempt, name=step, phase="apply").exists(),
        timeout=120,
        interval=0.05,
        message=f"attempt {attempt} to start step {step}",
    )
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.PROCESSING and job.attempts == attempt, (job.status, job.attempts, job.error)
    pid = worker_pid(job)
    wait_for(
        lambda: not process_alive(pid), timeout=90, interval=0.05, message=f"the drill to kill worker {pid} in {step}"
    )
    return job


def assert_died_in_the_middle_of(job_id: int, step: str, attempt: int) -> None:
    """The attempt's records show it was inside ``step`` when it died, and went no further."""
    rows = JobStep.objects.filter(job_id=job_id, attempt=attempt)
    killed = rows.get(name=step, phase="apply")
    assert (killed.outcome, killed.finished_at) == (JobStep.Outcome.RUNNING, None), killed
    # What the step needs had finished (it could not have started otherwise) ...
    done = {row.name: row.outcome for row in rows.filter(phase="apply", name__in=prerequisites(step))}
    assert done == {name: JobStep.Outcome.OK for name in prerequisites(step)}
    # ... and nothing that needs it started, nor any rollback: the process died right there.
    later = set(rows.filter(name__in=dependents(step)).values_list("name", flat=True))
    assert later == set(), f"steps after {step} started in attempt {attempt}: {later}"
    assert not rows.filter(phase="undo").exists()


def assert_step_work_done(infra, name: str, step: str) -> None:
    """What ``step`` builds exists and is as it should be, though its OK was never recorded."""
    found = step_named(step).observe(Context(site=name, db_password="", infra=infra), View(infra))
    assert found and all(resource.state == OK for resource in found), [str(r) for r in found]


def assert_one_set_of_resources(infra, name: str) -> None:
    """The site has each of its resources once: no second container or volume, no network,
    no second route or database account left by the attempt that died, and all as they should be."""
    n = SiteNames(name)
    owned = {
        kind: sorted(resource.name for resource in infra.docker.list_owned(kind, site=name))
        for kind in ("container", "volume", "network")
    }
    assert owned == {
        "container": sorted([n.nginx, n.php]),
        "volume": sorted([n.cache_volume, n.volume, *([n.tmp_volume] if SHARED_COMPILED_CORE else [])]),
        "network": [],
    }
    assert sorted(host for host, site in infra.caddy.routes().items() if site == name) == [n.domain]
    assert infra.db.user_hosts(n.db_user) == [settings.WPFLEET_DB_USER_HOST]
    assert [str(r) for r in observe_site(name, infra) if r.state != OK] == []


def wait_for_lease_expiry(job_id: int) -> None:
    # Nobody renews the dead worker's lease: once it has expired, housekeeping takes the job over.
    wait_for(
        lambda: Job.objects.get(pk=job_id).lease_expires_at < timezone.now(), timeout=30, message="the lease to expire"
    )


@pytest.mark.parametrize("step", STEP_NAMES)
def test_a_worker_killed_during_each_step_is_taken_over_and_the_site_ends_whole(step, infra, transactional_db):
    killed_then_resumed(infra, step, after_apply=False)


@pytest.mark.parametrize("step", ["php", "wordpress", "route"])
def test_a_worker_killed_after_a_step_did_its_work_is_taken_over_and_builds_nothing_twice(
    step, infra, transactional_db
):
    killed_then_resumed(infra, step, after_apply=True)


def killed_then_resumed(infra, step: str, after_apply: bool) -> None:
    """Kill attempt 1 in ``step`` (as it starts, or once its apply returned); attempt 2 must
    end DONE with the site serving, each of its resources there once, and leave nothing once deleted."""
    name = unique_name("kd" if after_apply else "kx")
    # "@1": the drill kills attempt 1 only; the same setting lets attempt 2 through.
    drill = {"WPFLEET_CRASH_DURING": f"{step}@done@1" if after_apply else f"{step}@1", "WPFLEET_LEASE_SECONDS": LEASE}
    clusters = [start_cluster(**drill)]
    try:
        site = create_site(name)
        job_id = site.current_job_id
        wait_for_drill_kill(job_id, step, attempt=1)
        assert_died_in_the_middle_of(job_id, step, attempt=1)
        if after_apply:
            assert_step_work_done(infra, name, step)
            injected("worker killed after a step's work, before its OK", step)
        else:
            injected("worker killed during a step", step)

        # The rest of the cluster goes down too (a restart of the panel); the
        # next one's housekeeping at start takes the job over.
        stop_cluster(clusters[0], signal.SIGKILL)
        wait_for_lease_expiry(job_id)
        clusters.append(start_cluster(**drill))
        wait_for(lambda: Job.objects.get(pk=job_id).is_final, timeout=150, interval=0.2, message="the job to end")

        job = Job.objects.get(pk=job_id)
        # Attempt 2: the takeover counted the dead attempt.
        assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
        second = job.steps.filter(attempt=2, phase="apply")
        assert dict(second.values_list("name", "outcome")) == {s: JobStep.Outcome.OK for s in STEP_NAMES}
        assert not job.steps.filter(attempt=2, phase="undo").exists()
        site = Site.objects.get(pk=site.pk)
        assert site.status == Site.Status.ACTIVE and site.current_job_id is None
        response = fetch(name)
        assert response.status_code == 200 and "WordPress" in response.text
        assert_one_set_of_resources(infra, name)

        delete = delete_site(site)
        wait_for(lambda: not Site.objects.filter(pk=site.pk).exists(), timeout=120, message="the site to be deleted")
        assert Job.objects.get(pk=delete.pk).status == Job.Status.DONE
        assert leftovers(infra, name) == []
    finally:
        for cluster in clusters:
            stop_cluster(cluster, signal.SIGKILL)
        force_remove(infra, name)


def test_a_job_whose_worker_dies_on_every_attempt_ends_failed_and_leaves_nothing(infra, transactional_db):
    name = unique_name("kall")
    drill = {"WPFLEET_CRASH_DURING": "php", "WPFLEET_LEASE_SECONDS": LEASE}
    # Created before any cluster runs, so that the job has 2 attempts before one claims it.
    site = create_site(name)
    job_id = site.current_job_id
    Job.objects.filter(pk=job_id).update(max_attempts=2)
    clusters = []
    try:
        for attempt in (1, 2):
            clusters.append(start_cluster(**drill))
            wait_for_drill_kill(job_id, "php", attempt)
            assert_died_in_the_middle_of(job_id, "php", attempt)
            injected("worker killed during a step", f"php (attempt {attempt} of 2)")
            stop_cluster(clusters[-1], signal.SIGKILL)
            wait_for_lease_expiry(job_id)
        # No attempt left: the next housekeeping hands the job to a last run that only undoes.
        clusters.append(start_cluster(**drill))
        wait_for(lambda: Job.objects.get(pk=job_id).is_final, timeout=120, interval=0.2, message="the job to end")

        job = Job.objects.get(pk=job_id)
        assert (job.status, job.attempts, job.abandoning) == (Job.Status.FAILED, 2, True)
        assert "worker running it died on attempt 2 of 2" in job.error, job.error
        assert "what it built was removed" in job.error, job.error
        # The abandon run undid every reversible step, each successfully, and applied nothing.
        undone = job.steps.filter(attempt=2, phase="undo")
        assert set(undone.values_list("outcome", flat=True)) == {JobStep.Outcome.UNDONE}
        assert {row.name for row in undone} == {step.name for step in PROVISION_STEPS if step.reversible}
        site = Site.objects.get(pk=site.pk)
        assert site.is_zombie and site.current_job_id is None
        assert Job.objects.filter(status__in=Job.OPEN).count() == 0
        assert leftovers(infra, name) == []
    finally:
        for cluster in clusters:
            stop_cluster(cluster, signal.SIGKILL)
        force_remove(infra, name)


def test_a_second_delivery_of_the_same_job_runs_nothing_twice(infra, transactional_db):
    name = unique_name("dup")
    site = create_site(name)
    enqueue(site.current_job_id)  # the broker hands the same job out again
    cluster = start_cluster(WPFLEET_WORKERS="2")
    try:
        wait_for(lambda: Job.objects.get(pk=site.current_job_id).is_final, timeout=120, message="job to finish")
        job = Job.objects.get(pk=site.current_job_id)
        assert job.status == Job.Status.DONE and job.attempts == 1
        applied = list(job.steps.filter(phase="apply").values_list("name", flat=True))
        assert sorted(applied) == sorted(STEP_NAMES)
        assert fetch(name).status_code == 200
    finally:
        stop_cluster(cluster)
        force_remove(infra, name)
