"""What the operators' console shows beside the models: live resource state,
job timelines, progress fingerprints and action reports.

Kept apart from the ModelAdmins so that the site page and the job page render
jobs the same way, and so that the probes can be tested on their own.
"""

from __future__ import annotations

import datetime as dt
import io
import tarfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Iterable

from django.conf import settings
from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.db.models import Count
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from docker.errors import NotFound

from jobs.models import Job, JobStep
from jobs.runner import redact
from sites.infra.caddy import Caddy
from sites.infra.docker_host import DockerHost, docker_errors
from sites.infra.errors import InfraError
from sites.infra.mariadb import MariaDBAdmin, owner_comment
from sites.models import Site, known_secrets
from sites.naming import SiteNames

# The whole page waits for the slowest probe: past this, a dependency is
# reported as not answering instead of holding the operator's page.
PROBE_BUDGET_SECONDS = 4.0


# --- badges and durations ---------------------------------------------------------


def badge(label: str, css: str, title: str = "") -> SafeString:
    return format_html('<span class="wpf-badge wpf-{}" title="{}">{}</span>', css, title, label)


def site_status_badge(site: Site) -> SafeString:
    html = badge(site.get_status_display(), site.status.lower())
    if site.is_zombie:
        html += format_html(" {}", badge("Zombie", "zombie", "Its last job failed for good; retry it or clean it up."))
    return html


def job_status_badge(job: Job) -> SafeString:
    if job.retry_due:
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


def truncate(text: str, length: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= length else text[: length - 1] + "…"


# --- live state of a site's resources ------------------------------------------------


@dataclass
class ResourceState:
    kind: str
    name: str
    state: str
    # "ok" present and working, "absent", "bad" (present but wrong), "unknown" (not reachable)
    health: str


def _reason(exc: BaseException, dependency: str, site: Site) -> str:
    text = str(exc) or exc.__class__.__name__
    if not isinstance(exc, InfraError):
        text = f"{exc.__class__.__name__}: {text}"
    if not text.startswith(f"{dependency}:"):
        text = f"{dependency}: {text}"
    return redact(truncate(text, 300), site.secrets() if site is not None else known_secrets())


def _probe_mariadb(site: Site, names: SiteNames) -> list[ResourceState]:
    db = MariaDBAdmin()
    comment = db.database_comment(names.database)
    if comment is None:
        database = ResourceState("database", names.database, "missing", "absent")
    elif comment == owner_comment(site.name):
        database = ResourceState("database", names.database, "exists", "ok")
    else:
        database = ResourceState("database", names.database, "exists, not wpfleet's", "bad")
    host = settings.WPFLEET_DB_USER_HOST
    user_name = f"{names.db_user}@{host}"
    if db.user_exists(names.db_user, host):
        user = ResourceState("database user", user_name, "exists", "ok")
    else:
        user = ResourceState("database user", user_name, "missing", "absent")
    return [database, user]


def _owned_labels(attrs_labels: dict | None, names: SiteNames) -> bool:
    labels = attrs_labels or {}
    return labels.get("wpfleet.owner") == settings.WPFLEET_OWNER and labels.get("wpfleet.site") == names.site


def _read_file(docker: DockerHost, container: str, path: str) -> str | None:
    with docker_errors(f"read {container}:{path}"):
        try:
            stream, _ = docker.client.api.get_archive(container, path)
        except NotFound:
            return None
        data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.next()
        extracted = tar.extractfile(member) if member is not None else None
        return extracted.read().decode("utf-8", "replace") if extracted is not None else None


def _probe_docker(site: Site, names: SiteNames) -> list[ResourceState]:
    docker = DockerHost()
    found: list[ResourceState] = []
    for kind, name, lookup in (
        ("volume", names.volume, docker.volume),
        ("network", names.network, docker.network),
    ):
        resource = lookup(name)
        if resource is None:
            found.append(ResourceState(kind, name, "missing", "absent"))
        elif _owned_labels(resource.attrs.get("Labels"), names):
            found.append(ResourceState(kind, name, "exists", "ok"))
        else:
            found.append(ResourceState(kind, name, "exists, not wpfleet's", "bad"))
    nginx = None
    for role, name in (("PHP-FPM container", names.php), ("nginx container", names.nginx)):
        container = docker.container(name)
        if container is None:
            found.append(ResourceState(role, name, "missing", "absent"))
            continue
        if not _owned_labels(container.labels, names):
            found.append(ResourceState(role, name, f"{container.status}, not wpfleet's", "bad"))
            continue
        health = (container.attrs.get("State", {}).get("Health") or {}).get("Status")
        state = container.status + (f" ({health})" if health else "")
        found.append(ResourceState(role, name, state, "ok" if container.status == "running" else "bad"))
        if name == names.nginx:
            nginx = container
    config = f"{names.nginx}:{names.nginx_config}"
    if nginx is None:
        found.append(ResourceState("nginx server block", config, "missing (no nginx container of the site)", "absent"))
    else:
        content = _read_file(docker, names.nginx, names.nginx_config)
        if content is None:
            found.append(ResourceState("nginx server block", config, "missing", "absent"))
        elif f"fastcgi_pass {names.php}:9000" in content:
            found.append(ResourceState("nginx server block", config, "installed", "ok"))
        else:
            # The image's stock default.conf: the server block step has not run.
            found.append(ResourceState("nginx server block", config, "image default, not the site's", "bad"))
    return found


def _probe_caddy(site: Site, names: SiteNames) -> list[ResourceState]:
    caddy = Caddy(DockerHost())
    path = names.snippet
    if caddy.has_snippet(site.name):
        return [ResourceState("Caddy snippet", path, "installed", "ok")]
    return [ResourceState("Caddy snippet", path, "missing", "absent")]


# What each probe reports on, so that a probe that fails still lists its rows.
_PROBES: tuple[tuple[str, Callable[[Site, SiteNames], list[ResourceState]], Callable[[SiteNames], list[tuple[str, str]]]], ...] = (
    ("mariadb", _probe_mariadb, lambda n: [("database", n.database), ("database user", f"{n.db_user}@{settings.WPFLEET_DB_USER_HOST}")]),
    ("docker", _probe_docker, lambda n: [
        ("volume", n.volume), ("network", n.network), ("PHP-FPM container", n.php), ("nginx container", n.nginx),
        ("nginx server block", f"{n.nginx}:{n.nginx_config}"),
    ]),
    ("caddy", _probe_caddy, lambda n: [("Caddy snippet", n.snippet)]),
)


def probe_resources(site: Site, budget: float = PROBE_BUDGET_SECONDS) -> tuple[list[ResourceState], list[str]]:
    """Every resource of the site with its state read from the infrastructure,
    and what went wrong asking for it.

    The three dependencies are asked in parallel; one that fails or does not
    answer within the budget shows as "unreachable: <dependency>" on its own
    rows (the reason once, in the problems) and never fails the page.
    """
    names = site.names
    pool = ThreadPoolExecutor(max_workers=len(_PROBES), thread_name_prefix="wpfleet-probe")
    try:
        futures = [(pool.submit(probe, site, names), rows) for _, probe, rows in _PROBES]
        deadline = time.monotonic() + budget
        results: list[ResourceState] = []
        problems: list[str] = []
        for (future, rows), (dependency, _, _) in zip(futures, _PROBES):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                results.extend(future.result(timeout=remaining))
                continue
            except FutureTimeout:
                problems.append(f"{dependency}: no answer within {budget:g} s")
            except Exception as exc:  # a dependency's failure is shown, never a 500
                problems.append(_reason(exc, dependency, site))
            results.extend(ResourceState(kind, name, f"unreachable: {dependency}", "unknown") for kind, name in rows(names))
        return results, problems
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
            "job": job, "url": job_url(job), "timeline": timeline(job), "badge": job_status_badge(job),
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
            site.status, site.current_job_id, site.last_job_id,
            job.status if job else "-", job.attempts if job else "-",
            _steps_signature(site.last_job_id), is_open,
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
