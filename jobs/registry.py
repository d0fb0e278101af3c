"""What each job type does, registered by the apps that own the work.

``jobs`` runs jobs without knowing what they are about: an app registers a
handler per job type (sites registers its job types in its ``ready()``),
and periodic housekeeping hooks (sites registers its reconciler and its
backup scheduler). Imports only point from those apps to ``jobs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from jobs.models import Job


class Recorder(Protocol):
    """Records a step's start (returns a handle) and its end (given the handle)."""

    def __call__(
        self, name: str, phase: str, outcome: str, error: str = "", handle: object | None = None
    ) -> object: ...


class JobHandler(Protocol):
    label: str
    # Which queue (jobs.queue.QUEUES) runs the job: "default", or "backups"
    # for long work that must never hold the workers provisioning needs.
    queue: str

    def secrets(self, job: Job) -> list[str]:
        """Texts to redact from anything recorded about the job."""
        ...

    def run(self, job: Job, record: Recorder) -> None:
        """One attempt. Raise to fail it; an exception whose ``permanent``
        attribute (or its ``cause``'s) is true is not retried."""
        ...

    def abandon(self, job: Job, record: Recorder) -> None:
        """The job will not be attempted again (its worker died on its last
        attempt): undo whatever its attempts may have left."""
        ...

    def on_done(self, job: Job) -> None:
        """In the transaction that marks the job DONE."""
        ...

    def on_final_failure(self, job: Job) -> None:
        """In the transaction that marks the job FAILED for good."""
        ...


_handlers: dict[str, JobHandler] = {}
_periodic: dict[str, Callable[[], object]] = {}


class UnknownJobType(Exception):
    permanent = True


def register(job_type: str, handler: JobHandler) -> None:
    _handlers[job_type] = handler


def handler_for(job_type: str) -> JobHandler:
    try:
        return _handlers[job_type]
    except KeyError:
        raise UnknownJobType(f"no handler is registered for job type {job_type!r}") from None


def queue(job_type: str) -> str:
    handler = _handlers.get(job_type)
    return getattr(handler, "queue", "default") if handler is not None else "default"


def label(job_type: str) -> str:
    handler = _handlers.get(job_type)
    return handler.label if handler is not None else job_type.title()


def register_periodic(name: str, func: Callable[[], object]) -> None:
    """Run ``func`` with every housekeeping pass (at cluster start and every minute)."""
    _periodic[name] = func


def periodic() -> dict[str, Callable[[], object]]:
    return dict(_periodic)
