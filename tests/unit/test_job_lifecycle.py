"""The generic job machinery (jobs/), with a fake job type: every job ends, DONE or FAILED.

Truth tables in the manner of AWX's reaper tests: each row is a job's state,
and what claim, take-over, the runner and the reaper do with it.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import requests
from django.utils import timezone
from docker.errors import APIError, ImageNotFound, InvalidArgument, NotFound

from jobs import reaper, registry, runner
from jobs.housekeeping import housekeeping
from jobs.models import Job, JobStep
from sites.infra.docker_host import docker_errors
from sites.infra.errors import InfraError, InvalidConfiguration
from sites.provisioning.orchestrator import StepFailed

pytestmark = pytest.mark.django_db

PAST = -60
FUTURE = +60


class FakeHandler:
    """A job type whose attempts do what the test says, and which records what it was asked."""

    label = "Fake"
    queue = "default"

    def __init__(self) -> None:
        self.outcomes: list[BaseException | None] = []
        self.calls: list[tuple[str, int]] = []

    def secrets(self, job: Job) -> list[str]:
        return ["s3cret"]

    def run(self, job: Job, record: registry.Recorder) -> None:
        self.calls.append(("run", job.pk))
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        self.calls.append(("abandon", job.pk))

    def on_done(self, job: Job) -> None:
        self.calls.append(("done", job.pk))

    def on_final_failure(self, job: Job) -> None:
        self.calls.append(("final failure", job.pk))


class Transient(Exception):
    pass


class Permanent(Exception):
    permanent = True


def engine_said(status: int, explanation: str, kind: type[APIError] = APIError) -> APIError:
    """An error of the Docker SDK as it raises one for an HTTP answer of the engine."""
    response = SimpleNamespace(status_code=status, reason="", url="http+docker://localhost/v1.47/containers/create")
    return kind(f"{status} from the engine", response=response, explanation=explanation)


def through_docker_errors(error: Exception) -> InfraError:
    """What the Docker adapter (docker_errors) makes of an error of the SDK."""
    try:
        with docker_errors("create container php_x"):
            raise error
    except InfraError as mapped:
        return mapped
    raise AssertionError("docker_errors let the error through")


BAD_REQUEST = engine_said(400, "invalid reference format: repository name must be lowercase")
NO_SUCH_IMAGE = engine_said(404, "No such image: wordpress:php9.9-fpm", ImageNotFound)
ENGINE_TROUBLE = engine_said(500, "failed to create task for container: context deadline exceeded")


@pytest.fixture(autouse=True)
def connection_kept(monkeypatch):
    # run_job closes stale connections first, as a long-lived worker must;
    # here that would close the test's own transaction.
    monkeypatch.setattr(runner, "close_old_connections", lambda: None)


@pytest.fixture
def handler():
    fake = FakeHandler()
    registry.register("FAKE", fake)
    yield fake
    registry._handlers.pop("FAKE", None)


@pytest.fixture
def queued(monkeypatch):
    """What the runner and the reaper put on the queue, with due times, instead of django-q."""
    calls: list[tuple[int, dt.datetime | None]] = []
    monkeypatch.setattr(runner, "enqueue", lambda job_id, due=None, job_type=None: calls.append((job_id, due)))
    monkeypatch.setattr(reaper, "enqueue", lambda job_id, due=None, job_type=None: calls.append((job_id, due)))
    return calls


def job(status=Job.Status.PENDING, attempts=0, max_attempts=3, due=None, lease=None, abandoning=False, **more) -> Job:
    now = timezone.now()
    return Job.objects.create(
        subject_name="thing",
        type="FAKE",
        status=status,
        attempts=attempts,
        max_attempts=max_attempts,
        abandoning=abandoning,
        worker="old-worker" if status == Job.Status.PROCESSING else "",
        next_attempt_at=None if due is None else now + dt.timedelta(seconds=due),
        lease_expires_at=None if lease is None else now + dt.timedelta(seconds=lease),
        **more,
    )


# --- claim ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state, claimable, attempts_after",
    [
        (dict(status=Job.Status.PENDING), True, 1),
        (dict(status=Job.Status.PENDING, attempts=3), False, 3),
        (dict(status=Job.Status.WAITING, attempts=1, due=PAST), True, 2),
        (dict(status=Job.Status.WAITING, attempts=1, due=FUTURE), False, 1),
        (dict(status=Job.Status.WAITING, attempts=3, due=PAST, abandoning=True), True, 3),
        (dict(status=Job.Status.PROCESSING, attempts=1, lease=FUTURE), False, 1),
        (dict(status=Job.Status.DONE, attempts=1), False, 1),
        (dict(status=Job.Status.FAILED, attempts=3), False, 3),
    ],
)
def test_claim_takes_exactly_the_runnable_jobs(state, claimable, attempts_after):
    row = job(**state)
    claimed = Job.claim(row.pk, "w")
    assert (claimed is not None) == claimable
    row.refresh_from_db()
    assert row.attempts == attempts_after
    if claimable:
        assert row.status == Job.Status.PROCESSING and row.worker == "w" and row.lease_expires_at is not None


# --- take-over of a dead worker's job ----------------------------------------------------------


@pytest.mark.parametrize(
    "state, after, abandoning",
    [
        # the dead attempt counted; attempts are left: run again, now
        (dict(attempts=1), Job.Status.WAITING, False),
        # none left: one last run, to undo
        (dict(attempts=3), Job.Status.WAITING, True),
        # the undo run's worker died too: over
        (dict(attempts=3, abandoning=True), Job.Status.FAILED, True),
    ],
)
def test_taking_over_a_dead_workers_job_counts_its_attempt(state, after, abandoning):
    row = job(status=Job.Status.PROCESSING, lease=PAST, **state)
    taken = Job.take_over(row.pk)
    assert taken is not None and taken.status == after and taken.abandoning == abandoning
    assert "died" in taken.error and taken.worker == ""
    if after == Job.Status.WAITING:
        assert taken.next_attempt_at <= timezone.now()
    else:
        assert taken.is_final and taken.finished_at is not None


@pytest.mark.parametrize(
    "state",
    [
        dict(status=Job.Status.PROCESSING, lease=FUTURE),  # its worker is alive
        dict(status=Job.Status.WAITING, due=PAST),
        dict(status=Job.Status.DONE),
    ],
)
def test_only_a_running_job_with_an_expired_lease_is_taken_over(state):
    assert Job.take_over(job(**state).pk) is None


def test_a_taken_over_job_no_longer_accepts_its_dead_workers_lease_or_result():
    row = job(status=Job.Status.PENDING)
    mine = Job.claim(row.pk, "w1")
    Job.objects.filter(pk=row.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert Job.take_over(row.pk) is not None
    assert mine.renew_lease() is False
    with pytest.raises(Exception, match="no longer held"):
        mine.mark_done()


# --- the runner: one attempt, never a wait ------------------------------------------------------


@pytest.mark.parametrize(
    "outcome, attempts, max_attempts, status, handler_calls, queued_again",
    [
        (None, 0, 3, Job.Status.DONE, ["run", "done"], False),
        (Transient("down"), 0, 3, Job.Status.WAITING, ["run"], True),
        (Transient("down"), 2, 3, Job.Status.FAILED, ["run", "final failure"], False),
        (Permanent("foreign"), 0, 3, Job.Status.FAILED, ["run", "final failure"], False),
        # An invalid configuration, as the provisioner reports a step's error: not retried.
        (
            StepFailed("php", through_docker_errors(NO_SUCH_IMAGE), []),
            0,
            3,
            Job.Status.FAILED,
            ["run", "final failure"],
            False,
        ),
        (StepFailed("php", through_docker_errors(ENGINE_TROUBLE), []), 0, 3, Job.Status.WAITING, ["run"], True),
    ],
)
def test_one_attempt_ends_done_waiting_or_failed(
    handler,
    queued,
    outcome,
    attempts,
    max_attempts,
    status,
    handler_calls,
    queued_again,
    django_capture_on_commit_callbacks,
):
    handler.outcomes = [outcome]
    row = job(attempts=attempts, max_attempts=max_attempts)
    with django_capture_on_commit_callbacks(execute=True):
        result = runner.run_job(row.pk)
    row.refresh_from_db()
    assert row.status == status
    assert [call for call, _ in handler.calls] == handler_calls
    assert result == {Job.Status.DONE: "done", Job.Status.WAITING: "retry", Job.Status.FAILED: "failed"}[status]
    if queued_again:
        # queued for its due time: no worker sleeps through the backoff
        assert queued == [(row.pk, row.next_attempt_at)] and row.next_attempt_at > timezone.now()
    else:
        assert queued == []


def test_a_permanent_error_is_not_retried_and_says_so(handler, queued):
    handler.outcomes = [Permanent("volume wp_x exists and is not wpfleet's")]
    row = job()
    runner.run_job(row.pk)
    row.refresh_from_db()
    assert row.status == Job.Status.FAILED and row.attempts == 1
    assert row.error == "volume wp_x exists and is not wpfleet's (permanent: not retried)"


@pytest.mark.parametrize(
    "error, permanent",
    [
        (BAD_REQUEST, True),
        (NO_SUCH_IMAGE, True),
        # the same answer, from a call the SDK does not recognise as one about an image
        (engine_said(404, "No such image: wordpress:php9.9-fpm"), True),
        (InvalidArgument("invalid mount type: 'nfs'"), True),
        (engine_said(409, "Conflict. The container name is already in use"), False),
        (ENGINE_TROUBLE, False),
        (engine_said(404, "No such container: php_x", NotFound), False),
        (requests.exceptions.ConnectionError("Connection aborted: /var/run/docker.sock"), False),
    ],
)
def test_the_docker_adapter_tells_an_invalid_configuration_from_a_passing_trouble(error, permanent):
    mapped = through_docker_errors(error)
    assert isinstance(mapped, InvalidConfiguration) == permanent
    assert runner.is_permanent(mapped) == permanent
    assert mapped.dependency == "docker" and mapped.message.startswith("create container php_x: ")


def test_an_image_that_does_not_exist_fails_the_job_once_and_says_so(handler, queued):
    handler.outcomes = [StepFailed("php", through_docker_errors(NO_SUCH_IMAGE), [])]
    row = job()
    runner.run_job(row.pk)
    row.refresh_from_db()
    assert row.status == Job.Status.FAILED and row.attempts == 1 and queued == []
    refused = "step php failed: docker: create container php_x: No such image: wordpress:php9.9-fpm"
    assert row.error == f"{refused} (permanent: not retried)"


def test_secrets_are_redacted_from_the_error_and_the_traceback(handler, queued):
    handler.outcomes = [Permanent("password s3cret rejected")]
    row = job()
    runner.run_job(row.pk)
    row.refresh_from_db()
    assert "s3cret" not in row.error and "s3cret" not in row.traceback and "[redacted]" in row.error


def test_an_abandoned_job_only_undoes_then_fails_saying_why(handler, queued):
    row = job(
        status=Job.Status.WAITING,
        attempts=3,
        due=PAST,
        abandoning=True,
        error="the worker running it died on attempt 3 of 3",
    )
    assert runner.run_job(row.pk) == "failed"
    row.refresh_from_db()
    assert [call for call, _ in handler.calls] == ["abandon", "final failure"]
    assert row.status == Job.Status.FAILED
    assert row.error == "the worker running it died on attempt 3 of 3; what it built was removed"


def test_a_job_of_an_unknown_type_fails_for_good():
    row = Job.objects.create(subject_name="x", type="NOPE")
    assert runner.run_job(row.pk) == "failed"
    row.refresh_from_db()
    assert row.status == Job.Status.FAILED and "no handler" in row.error


# --- a job that keeps killing its worker ends -------------------------------------------------


def test_a_job_that_kills_its_worker_every_time_ends_failed(handler, queued):
    row = job(max_attempts=3)
    claims = 0
    for _ in range(10):  # bounded: far more rounds than it may take
        claimed = Job.claim(row.pk, f"worker-{claims}")
        if claimed is None:
            break
        claims += 1
        if claimed.abandoning:
            runner.attempt(claimed)  # the undo run survives
            break
        # The worker dies mid-attempt: nothing is recorded, the lease runs out.
        Job.objects.filter(pk=row.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
        assert reaper.reap_expired_leases() == [row.pk]
    row.refresh_from_db()
    assert row.status == Job.Status.FAILED and row.attempts == 3
    assert claims == 4, "three attempts, then one run that only undoes"
    assert "died on attempt 3 of 3" in row.error and [c for c, _ in handler.calls] == ["abandon", "final failure"]


def test_a_job_whose_undo_run_also_dies_is_failed_by_the_reaper(handler, queued):
    row = job(status=Job.Status.PROCESSING, attempts=3, lease=PAST, abandoning=True, error="died on attempt 3 of 3")
    assert reaper.reap_expired_leases() == [row.pk]
    row.refresh_from_db()
    assert row.status == Job.Status.FAILED and "run the cleanup" in row.error
    assert [c for c, _ in handler.calls] == ["final failure"] and queued == []


# --- the reaper and the requeue, through housekeeping -------------------------------------------


def test_housekeeping_takes_over_expired_jobs_and_requeues_stranded_ones(handler, queued, monkeypatch):
    monkeypatch.setattr(registry, "_periodic", {})
    long_ago = timezone.now() - reaper.STRANDED_AFTER - dt.timedelta(seconds=5)
    dead = job(status=Job.Status.PROCESSING, attempts=1, lease=PAST)
    alive = job(status=Job.Status.PROCESSING, attempts=1, lease=FUTURE)
    stranded_pending = job(created_at=long_ago)
    fresh_pending = job()
    stranded_waiting = job(status=Job.Status.WAITING, attempts=1, due=-reaper.STRANDED_AFTER.total_seconds() - 5)
    due_soon = job(status=Job.Status.WAITING, attempts=1, due=PAST)

    report = housekeeping()

    assert report["recovered"] == [dead.pk]
    assert sorted(report["requeued"]) == sorted([stranded_pending.pk, stranded_waiting.pk])
    assert sorted(job_id for job_id, _ in queued) == sorted([dead.pk, stranded_pending.pk, stranded_waiting.pk])
    for untouched in (alive, fresh_pending, due_soon):
        before = untouched.status
        untouched.refresh_from_db()
        assert untouched.status == before


def test_housekeeping_runs_the_registered_periodic_work_and_survives_its_failure(queued, monkeypatch):
    def broken() -> None:
        raise RuntimeError("engine down")

    monkeypatch.setattr(registry, "_periodic", {"repaired": lambda: {"site": ["volume missing"]}, "other": broken})
    report = housekeeping()
    assert report["repaired"] == {"site": ["volume missing"]}
    assert report["other"] == "not done: engine down"


def test_the_steps_a_dead_worker_left_running_are_closed_as_failed(handler, queued):
    row = job(status=Job.Status.PROCESSING, attempts=2, lease=PAST)
    earlier = JobStep.objects.create(
        job=row, attempt=1, name="php", outcome=JobStep.Outcome.FAILED, finished_at=timezone.now()
    )
    running = JobStep.objects.create(job=row, attempt=2, name="php")
    assert reaper.reap_expired_leases() == [row.pk]
    running.refresh_from_db()
    assert running.outcome == JobStep.Outcome.FAILED and running.finished_at is not None
    assert running.error == "the worker died during this step"
    earlier.refresh_from_db()
    assert earlier.error == ""
