"""What the operators' console shows beside the models: live resource state,
job timelines, progress fingerprints and action reports.

Kept apart from the ModelAdmins so that the site page and the job page render
jobs the same way, and so that the probes can be tested on their own.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.db.models import Count
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.models import Job, JobStep
from jobs.redaction import redact
from sites.infra.errors import InfraError
from sites.models import Backup, Site, known_secrets
from sites.provisioning.handlers import site_context
from sites.provisioning.steps import DRIFTED, FOREIGN, MISSING, OK, PROVISION_STEPS, STOPPED, Infra, Step, View

# The whole page waits for the slowest probe: past this, a dependency is
# reported as not answering instead of holding the operator's page.
PROBE_BUDGET_SECONDS = 4.0


# --- badges and durations ---------------------------------------------------------


def badge(label: str, css: str, title: str = "") -> SafeString:
    return format_html('<span class="wpf-badge wpf-{}" title="{}">{}</span>', css, title, label)


def site_status_badge(site: Site) -> SafeString:
    html = badge(site.get_status_display(), site.status.lower(), _STATUS_TITLES.get(site.status, ""))
    if site.is_zombie:
        html += format_html(" {}", badge("Zombie", "zombie", "Its last job failed for good; retry it or clean it up."))
    if site.cron_flagged:
        html += format_html(" {}", cron_flag_badge(site))
    return html


_STATUS_TITLES: dict[str, str] = {
    Site.Status.SUSPENDED: "Caddy answers 503 and its containers are stopped; its data is kept.",
}


def cron_flag_badge(site: Site) -> SafeString:
    return badge(
        "Cron flagged",
        "cron-flagged",
        f"Its WordPress cron failed {site.cron_failures} times in a row: not run until the flag is cleared.",
    )


def job_status_badge(job: Job) -> SafeString:
    if job.status == Job.Status.WAITING and job.next_attempt_at is not None:
        return badge("Retry due", "retry", f"next attempt at {job.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC")
    return badge(job.get_status_display(), job.status.lower())


def step_outcome_badge(step: JobStep) -> SafeString:
    return badge(step.get_outcome_display(), step.outcome.lower())


def format_duration(duration: dt.timedelta | None) -> str:
    if duration is None:
        return "—"
    # Clocks of different workers may disagree by a little.
    seconds = max(duration.total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def backup_taken_at(backup: Backup) -> str:
    """A backup's time as titles, messages and log entries name it: its key means nothing to a person."""
    return f"{backup.created_at:%Y-%m-%d %H:%M:%S} UTC"


def size(nbytes: int | None) -> str:
    """Bytes for a person, in binary units ("117.7 MB", "2 GB"); "—" when not known."""
    if nbytes is None:
        return "—"
    value, unit = float(nbytes), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{text.removesuffix('.0')} {unit}"


def percent(part: int | None, whole: int | None) -> float | None:
    """``part`` in % of ``whole``, or None when either is not known."""
    if part is None or not whole:
        return None
    return round(part * 100 / whole, 1)


def disk_usage(site: Site) -> str:
    """The site's disk use against its quota ("1.2 GB / 2 GB"), as the list and the site's page show it."""
    return f"{size(site.usage_disk)} / {size(site.disk_quota)}"


def truncate(text: str, length: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


# --- live state of a site's resources ------------------------------------------------


@dataclass
class ResourceState:
    kind: str
    name: str
    state: str
    # "ok" present and working, "absent", "bad" (present but wrong or not ours), "unknown" (not reachable)
    health: str


_HEALTH = {OK: "ok", MISSING: "absent", STOPPED: "bad", DRIFTED: "bad", FOREIGN: "bad"}


def _reason(exc: BaseException, site: Site) -> str:
    text = str(exc) or exc.__class__.__name__
    if not isinstance(exc, InfraError):
        text = f"{exc.__class__.__name__}: {text}"
    return redact(truncate(text, 300), site.secrets() if site is not None else known_secrets())


def reason(exc: BaseException, site: Site) -> str:
    """What went wrong asking a dependency, short and without the site's secrets, for a message."""
    return _reason(exc, site)


def _observe(step: Step, site: Site, hostnames: tuple[str, ...], home: str) -> list[ResourceState]:
    ctx = site_context(site, Infra(), db_password="")
    ctx.hostnames, ctx.home = hostnames, home
    suspended = site.status == Site.Status.SUSPENDED

    def health(r) -> str:
        # A suspended site's containers are stopped, and its hostnames answer 503, on purpose.
        if suspended and (r.state == STOPPED or (r.state == DRIFTED and "suspended" in r.detail)):
            return "ok"
        return _HEALTH.get(r.state, "bad")

    return [ResourceState(r.kind, r.name, r.detail or r.state, health(r)) for r in step.observe(ctx, View(ctx.infra))]


def probe_resources(site: Site, budget: float = PROBE_BUDGET_SECONDS) -> tuple[list[ResourceState], list[str]]:
    """Every resource of the site, as its steps observe it through the adapters,
    and what went wrong asking for it.

    The steps are asked in parallel; one that fails or does not answer within
    the budget shows as one "unreachable" row (the reason once, in the
    problems) and never fails the page.
    """
    steps = PROVISION_STEPS
    pool = ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="wpfleet-probe")
    try:
        # Read here, not in the probes' threads (which have connections of their own).
        hostnames, home = site.hostnames(desired=False), site.home_host(desired=False)
        futures = [(pool.submit(_observe, step, site, hostnames, home), step) for step in steps]
        deadline = time.monotonic() + budget
        results: list[ResourceState] = []
        # One line per reason, naming the steps it hides (a stopped engine
        # hides six of them for the same reason).
        problems: dict[str, list[str]] = defaultdict(list)
        for future, step in futures:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                results.extend(future.result(timeout=remaining))
                continue
            except FutureTimeout:
                reason = f"no answer within {budget:g} s"
            except Exception as exc:  # a dependency's failure is shown, never a 500
                reason = _reason(exc, site)
            problems[reason].append(step.name)
            results.append(ResourceState(step.name.replace("_", " "), "—", "unreachable", "unknown"))
        return results, [f"{reason} ({', '.join(steps)})" for reason, steps in problems.items()]
    finally:
        # A probe stuck on a hung engine finishes in the background.
        pool.shutdown(wait=False, cancel_futures=True)


def render_resources(site: Site) -> SafeString:
    rows, problems = probe_resources(site)
    expected_present = site.status == Site.Status.ACTIVE
    return render_to_string(
        "wpfleet/resources.html",
        {"rows": rows, "problems": problems, "expected_present": expected_present, "site": site},
    )


# --- jobs and their steps --------------------------------------------------------------


@dataclass
class StepRow:
    step: JobStep
    offset_pct: float
    width_pct: float
    job_running: bool

    @property
    def badge(self) -> SafeString:
        return step_outcome_badge(self.step)

    @property
    def duration(self) -> str:
        if self.step.finished_at:
            return format_duration(self.step.duration)
        # A step left unfinished by a job that is no longer running: its worker died.
        return "running…" if self.job_running else "unfinished"


@dataclass
class AttemptTimeline:
    attempt: int
    steps: list[StepRow]
    duration: str


def timeline(job: Job, steps: Iterable[JobStep] | None = None) -> list[AttemptTimeline]:
    """The job's steps grouped by attempt, each with its place on the attempt's time axis."""
    by_attempt: dict[int, list[JobStep]] = defaultdict(list)
    for step in job.steps.all() if steps is None else steps:
        by_attempt[step.attempt].append(step)
    result = []
    for number in sorted(by_attempt):
        steps_of = by_attempt[number]
        start = min(step.started_at for step in steps_of)
        end = max((step.finished_at or step.started_at) for step in steps_of)
        running = job.status == Job.Status.PROCESSING
        if running and any(step.finished_at is None for step in steps_of):
            end = max(end, timezone.now())
        total = max((end - start).total_seconds(), 0.001)
        rows = []
        for step in steps_of:
            finish = step.finished_at or end
            offset = (step.started_at - start).total_seconds() / total * 100
            width = max((finish - step.started_at).total_seconds() / total * 100, 0.5)
            rows.append(StepRow(step, round(offset, 2), round(min(width, 100 - offset), 2), running))
        result.append(AttemptTimeline(number, rows, format_duration(end - start)))
    return result


def job_url(job: Job) -> str:
    return reverse("admin:jobs_job_change", args=[job.pk])


def render_jobs(site: Site, limit: int = 10) -> SafeString:
    jobs = list(site.jobs.order_by("-created_at", "-id").prefetch_related("steps")[:limit])
    entries = [
        {
            "job": job,
            "url": job_url(job),
            "timeline": timeline(job),
            "badge": job_status_badge(job),
            "duration": format_duration(job.duration),
        }
        for job in jobs
    ]
    return render_to_string("wpfleet/jobs.html", {"entries": entries, "limit": limit})


def render_timeline(job: Job) -> SafeString:
    return render_to_string("wpfleet/timeline.html", {"job": job, "timeline": timeline(job)})


# --- progress: what a page polls while a job is open -------------------------------------


def _steps_signature(job_id: int | None) -> str:
    if job_id is None:
        return "-"
    counts = JobStep.objects.filter(job_id=job_id).aggregate(total=Count("id"), finished=Count("finished_at"))
    return f"{counts['total']}.{counts['finished']}"


def site_progress(site: Site) -> dict:
    """Whether the site has an open job, and a fingerprint that changes with every visible change."""
    job = Job.objects.filter(pk=site.last_job_id).first() if site.last_job_id else None
    is_open = site.current_job_id is not None
    fingerprint = "|".join(
        str(part)
        for part in (
            site.status,
            site.current_job_id,
            site.last_job_id,
            job.status if job else "-",
            job.attempts if job else "-",
            _steps_signature(site.last_job_id),
            is_open,
        )
    )
    return {"open": is_open, "fingerprint": fingerprint, "status": site.status}


def sites_progress(site_ids: list[int]) -> dict:
    """The same for a page of the list: the listed sites' states and latest jobs, in one query."""
    rows = (
        Site.objects.filter(pk__in=site_ids)
        .order_by("pk")
        .values_list("pk", "status", "current_job_id", "last_job_id", "last_job__status", "last_job__attempts")
    )
    states = [":".join(str(value) for value in row) for row in rows]
    is_open = any(state.split(":")[2] != "None" for state in states)
    return {"open": is_open, "fingerprint": "|".join(states) + f"|{is_open}"}


def job_progress(job: Job) -> dict:
    is_open = not job.is_final
    fingerprint = "|".join(
        str(part) for part in (job.status, job.attempts, job.next_attempt_at, _steps_signature(job.pk), is_open)
    )
    return {"open": is_open, "fingerprint": fingerprint, "status": job.status}


# --- what an action reports ----------------------------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Tally:
    """Counts what an action did and why it skipped the rest, for one message."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.skipped: dict[str, list[str]] = defaultdict(list)
        self.failed: list[str] = []

    def skip(self, name: str, reason: str) -> None:
        self.skipped[reason].append(name)

    @staticmethod
    def _names(names: list[str], most: int = 5) -> str:
        shown = ", ".join(names[:most])
        return shown + (f" and {len(names) - most} more" if len(names) > most else "")

    def message(self, noun: str, outcome: str) -> str:
        text = f"{plural(len(self.done), noun)} {outcome}"
        skipped = sum(len(names) for names in self.skipped.values())
        if skipped:
            reasons = "; ".join(f"{reason} ({self._names(names)})" for reason, names in self.skipped.items())
            text += f"; {skipped} skipped: {reasons}"
        if self.failed:
            text += f"; {len(self.failed)} failed: " + "; ".join(truncate(line, 300) for line in self.failed[:5])
        return text


def report(modeladmin: ModelAdmin, request: HttpRequest, tally: Tally, noun: str, outcome: str) -> None:
    """One message for an action: success only when everything selected was done."""
    if tally.failed:
        level = messages.ERROR
    elif tally.skipped or not tally.done:
        level = messages.WARNING
    else:
        level = messages.SUCCESS
    modeladmin.message_user(request, tally.message(noun, outcome), level)
