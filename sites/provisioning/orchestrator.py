"""Running the steps: independent ones side by side, rollback in reverse on any failure."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from django.conf import settings

from jobs.registry import Recorder
from sites.infra.errors import InfraError
from sites.provisioning.restore import Source
from sites.provisioning.steps import PROVISION_STEPS, Context, Infra, Step, WordPressProfile, step_named

# The steps that make a site answer to its hostnames, applied again in this
# order when they change (sites.provisioning.handlers.ChangeDomains): nginx's
# aliases, WordPress's home, Caddy's routes, then the check of them all.
HOSTNAME_STEPS = ("nginx", "wordpress", "route", "live_check")


class StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException, undo_errors: list[str]):
        self.step = step
        self.cause = cause
        self.undo_errors = undo_errors
        message = f"step {step} failed: {cause}"
        if undo_errors:
            message += " | rollback incomplete: " + "; ".join(undo_errors)
        super().__init__(message)


class InjectedFault(Exception):
    """Raised after a step's apply when WPFLEET_FAULTS names it (tests, drills).

    ``php`` fails every attempt after the php step; ``php@1`` only the first.
    """


def no_record(name: str, phase: str, outcome: str, error: str = "", handle: object | None = None) -> object:
    return None


# Called with the step's name while it runs (after its apply started, before
# it returns): the crash tests' hook to kill a worker in the middle of a step.
StepHook = Callable[[str], None]


class Provisioner:
    def __init__(
        self,
        site: str,
        db_password: str,
        recorder: Recorder = no_record,
        infra: Infra | None = None,
        attempt: int = 1,
        during_step: StepHook | None = None,
        profile: WordPressProfile | None = None,
        hostnames: tuple[str, ...] = (),
        home: str = "",
        restore: Source | None = None,
        page_cache: bool = True,
        php_version: str = "",
        php_values: dict[str, str | int] | None = None,
        disk_quota: int | None = None,
    ):
        self.ctx = Context(
            site=site,
            db_password=db_password,
            infra=infra or Infra(),
            profile=profile,
            hostnames=hostnames,
            home=home,
            restore=restore,
            page_cache=page_cache,
            php_version=php_version,
        )
        if php_values is not None:
            self.ctx.php_values = dict(php_values)
        if disk_quota is not None:
            self.ctx.disk_quota = disk_quota
        self.record = recorder
        self.attempt = attempt
        self.during_step = during_step

    def _fault_after(self, step: str) -> bool:
        return self._drill(settings.WPFLEET_FAULTS, step)

    def _drill(self, names: tuple[str, ...], step: str) -> bool:
        return step in names or f"{step}@{self.attempt}" in names

    def _apply(self, step: Step) -> None:
        """Apply one step, with the crash and fault drills around it.

        WPFLEET_CRASH_DURING kills the worker (SIGKILL, as an OOM kill or a
        power cut would) at one of two points of a step, its RUNNING record
        committed either way: ``php`` (``php@1``: on attempt 1 only) as the
        step starts, before anything is built; ``php@done`` (``php@done@1``)
        once its apply has returned and before its OK is recorded, so that
        the next attempt finds the step's work done without knowing it.
        """
        drills = settings.WPFLEET_CRASH_DURING
        if self.during_step is not None:
            self.during_step(step.name)
        if self._drill(drills, step.name):
            os.kill(os.getpid(), signal.SIGKILL)
        step.apply(self.ctx)
        if self._drill(tuple(d.replace("@done", "", 1) for d in drills if "@done" in d), step.name):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._fault_after(step.name):
            raise InjectedFault(f"injected fault after {step.name}")

    def provision(self) -> None:
        """Apply every step once the steps it needs are done; independent steps run side by side.

        On a failure no new step starts; the running ones finish, then every
        step that started (the failed one too) is undone in reverse order.
        Only this thread records steps, so the step threads never touch the
        control database.
        """
        steps = PROVISION_STEPS
        needs = {step.name: set(step.needs) for step in steps}
        done: set[str] = set()
        started: list[Step] = []
        pending = list(steps)
        failure: tuple[Step, BaseException] | None = None
        threads = settings.WPFLEET_STEP_THREADS
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"provision-{self.ctx.site}") as pool:
            running: dict[Future, tuple[Step, object]] = {}
            while True:
                if failure is None:
                    for step in [s for s in pending if needs[s.name] <= done]:
                        pending.remove(step)
                        started.append(step)
                        handle = self.record(step.name, "apply", "RUNNING", "")
                        running[pool.submit(self._apply, step)] = (step, handle)
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    step, handle = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(step.name)
                        self.record(step.name, "apply", "OK", "", handle=handle)
                    else:
                        self.record(step.name, "apply", "FAILED", str(error), handle=handle)
                        failure = failure or (step, error)
        if failure is None and pending:
            raise RuntimeError(f"steps never became ready: {[s.name for s in pending]}")
        if failure is not None:
            step, error = failure
            undo_errors = self.undo([s for s in steps if s in started])
            raise StepFailed(step.name, error, undo_errors) from error

    def change_hostnames(self, previous: Context) -> None:
        """Apply the hostname steps for this context's hostnames and home.

        On a failure, the same steps are applied for ``previous`` (what the
        site served before), recorded as the rollback; the site's own
        hostname serves throughout.
        """
        for step in map(step_named, HOSTNAME_STEPS):
            handle = self.record(step.name, "apply", "RUNNING", "")
            try:
                self._apply(step)
            except Exception as error:
                self.record(step.name, "apply", "FAILED", str(error), handle=handle)
                raise StepFailed(step.name, error, self.restore_hostnames(previous)) from error
            self.record(step.name, "apply", "OK", "", handle=handle)

    def restore_hostnames(self, previous: Context) -> list[str]:
        """Serve ``previous``'s hostnames and home again; what could not be done, by step."""
        errors: list[str] = []
        for step in map(step_named, HOSTNAME_STEPS[:-1]):
            handle = self.record(step.name, "undo", "RUNNING", "")
            try:
                step.apply(previous)
            except Exception as exc:
                errors.append(f"{step.name}: {exc}")
                self.record(step.name, "undo", "UNDO_FAILED", str(exc), handle=handle)
                continue
            self.record(step.name, "undo", "UNDONE", "back to " + ", ".join(previous.served), handle=handle)
        return errors

    def deprovision(self) -> None:
        """Undo every step in reverse; fails if anything could not be removed."""
        undo_errors = self.undo(list(PROVISION_STEPS))
        if undo_errors:
            raise InfraError("rollback", "; ".join(undo_errors))

    def undo(self, steps: list[Step]) -> list[str]:
        errors: list[str] = []
        for step in reversed(steps):
            if not step.reversible:
                continue
            handle = self.record(step.name, "undo", "RUNNING", "")
            before = len(self.ctx.notes)
            try:
                step.undo(self.ctx)
            except Exception as exc:
                errors.append(f"{step.name}: {exc}")
                self.record(step.name, "undo", "UNDO_FAILED", str(exc), handle=handle)
                continue
            self.record(step.name, "undo", "UNDONE", "; ".join(self.ctx.notes[before:]), handle=handle)
        return errors
