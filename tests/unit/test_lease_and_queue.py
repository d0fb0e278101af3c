"""The lease a running job holds (jobs.lease) and the queue that hands jobs to the clusters (jobs.queue).

No real waiting: the lease renews every few milliseconds here, and a due
time is reached by moving the queue row's time, not by sleeping until it.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import OperationalError
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from jobs import registry
from jobs.lease import Lease
from jobs.models import Job
from jobs.queue import _Broker, cluster_names, enqueue

pytestmark = pytest.mark.django_db

BOUND = 5  # seconds: a bound on a wait that ends in milliseconds, never the thing tested


class RenewingJob:
    """A job's stand-in whose renewals answer as the test says, and count."""

    pk = 7

    def __init__(self, answers: list[bool | Exception], enough: int):
        self.answers = answers
        self.renewals = 0
        self.enough = enough
        self.reached = threading.Event()

    def renew_lease(self) -> bool:
        self.renewals += 1
        if self.renewals >= self.enough:
            self.reached.set()
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


# --- the lease ----------------------------------------------------------------------------------


def test_a_lease_is_renewed_at_a_third_of_its_length_but_not_more_often_than_every_second(settings):
    settings.WPFLEET_LEASE_SECONDS = 30
    assert Lease(RenewingJob([], 1)).interval == 10  # type: ignore[arg-type]
    settings.WPFLEET_LEASE_SECONDS = 2
    assert Lease(RenewingJob([], 1)).interval == 1  # type: ignore[arg-type]


def test_a_lease_renews_its_job_again_and_again_while_the_job_runs_and_stops_with_it():
    job = RenewingJob([], enough=3)
    with Lease(job, interval=0.001) as lease:  # type: ignore[arg-type]
        assert job.reached.wait(BOUND), "the lease was renewed fewer than 3 times"
    # The block's end stops the renewing thread: a finished job's lease is not renewed.
    assert not lease._thread.is_alive()


def test_a_lease_that_was_lost_is_never_renewed_again():
    job = RenewingJob([False], enough=1)
    with Lease(job, interval=0.001) as lease:  # type: ignore[arg-type]
        lease._thread.join(BOUND)
        assert not lease._thread.is_alive(), "the lease thread goes on after its lease was lost"
    assert job.renewals == 1


def test_a_renewal_that_fails_is_tried_again_at_the_next_interval():
    job = RenewingJob([OperationalError("server has gone away"), True], enough=2)
    with Lease(job, interval=0.001):  # type: ignore[arg-type]
        assert job.reached.wait(BOUND), "the lease gave up after one failed renewal"


def test_renewing_moves_the_lease_to_now_plus_its_length_for_the_worker_holding_the_job(settings, monkeypatch):
    settings.WPFLEET_LEASE_SECONDS = 30
    row = Job.objects.create(subject_name="thing", type="FAKE")
    mine = Job.claim(row.pk, "worker-1")
    assert mine is not None
    later = timezone.now() + dt.timedelta(minutes=5)
    monkeypatch.setattr("jobs.models.timezone.now", lambda: later)
    assert mine.renew_lease() is True
    row.refresh_from_db()
    assert row.lease_expires_at == later + dt.timedelta(seconds=30)

    someone_else = Job.objects.get(pk=row.pk)
    someone_else.worker = "worker-2"
    assert someone_else.renew_lease() is False


# --- the queue ---------------------------------------------------------------------------------


@pytest.fixture
def no_poll_wait(monkeypatch):
    # The ORM broker sleeps for the poll interval when it finds nothing to hand out.
    monkeypatch.setattr(Conf, "POLL", 0)


def test_a_job_queued_for_a_due_time_waits_in_the_queue_table_holding_no_worker(no_poll_wait):
    due = timezone.now() + dt.timedelta(minutes=10)
    enqueue(41, due=due, job_type="FAKE")

    row = OrmQ.objects.get()
    assert row.key == cluster_names()["default"] and row.lock == due
    task = SignedPackage.loads(row.payload)
    assert (task["func"], task["args"], task["name"]) == ("jobs.runner.run_job", (41,), "job-41")

    broker = _Broker(row.key, None)
    assert broker.queue_size() == 0
    assert not broker.dequeue(), "the broker handed out a job before its due time"

    # Its due time comes (the row's time moves, rather than the test sleeping until it):
    OrmQ.objects.filter(pk=row.pk).update(lock=timezone.now() - dt.timedelta(seconds=1))
    assert broker.dequeue() == [(row.pk, row.payload)]


def test_a_job_queued_now_is_handed_out_at_once(no_poll_wait):
    enqueue(42, job_type="FAKE")
    row = OrmQ.objects.get()
    handed = _Broker(row.key, None).dequeue()
    assert handed == [(row.pk, row.payload)]


def test_a_job_goes_to_the_cluster_of_its_types_queue(monkeypatch):
    class BackupLike:
        queue = "backups"

    monkeypatch.setitem(registry._handlers, "SLOW", BackupLike())
    Job.objects.create(subject_name="thing", type="SLOW")
    enqueue(43, job_type="SLOW")
    enqueue(Job.objects.get(type="SLOW").pk)  # the type read from the job itself
    enqueue(44, job_type="FAKE")
    keys = list(OrmQ.objects.order_by("pk").values_list("key", flat=True))
    names = cluster_names()
    assert keys == [names["backups"], names["backups"], names["default"]]
