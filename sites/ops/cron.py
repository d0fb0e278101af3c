"""WordPress cron, run by the worker on a schedule instead of by visitors' page views.

Sites run with DISABLE_WP_CRON (the must-use plugin
sites.provisioning.templates.CRON_PLUGIN), so a visit never runs cron. The
worker's housekeeping (every minute) calls ``run_due_crons``: each ACTIVE
site that no job holds runs its due events every
WPFLEET_CRON_INTERVAL_SECONDS, at its own offset in the interval (from the
crc32 of its name, like scheduled backups), so that a thousand sites do not
all run in the same minute. A pass claims a site with a conditional UPDATE
that moves its due time on (two overlapping passes never run it twice),
runs WPFLEET_CRON_PARALLEL sites at once and starts none after its time
budget: the rest stay due for the next pass.

A run is ``php -r`` as www-data in the site's PHP container, with WordPress
loaded for its home host, doing what wp-cron.php does (its lock included),
cut by coreutils ``timeout`` inside the container so that the PHP process
really ends (a docker exec client that gives up leaves it running). A site
whose cron failed WPFLEET_CRON_MAX_FAILURES times in a row is flagged
(``Site.cron_flagged``) and no longer run until ``clear_cron_flag`` (or a
run by hand that succeeds).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django.utils.html import strip_tags

from jobs.redaction import redact
from sites.infra.docker_host import DockerHost
from sites.infra.errors import InfraError
from sites.models import Site, SiteBusy
from sites.models.site import REPAIR_LEASE
from sites.ops.wordpress import LOAD_WORDPRESS, SiteNotActive
from sites.provisioning.steps import Infra

log = logging.getLogger("wpfleet.cron")

# A pass starts no run after this long (housekeeping runs every minute); runs
# already started finish (each within WPFLEET_CRON_TIMEOUT_SECONDS).
BUDGET_SECONDS = 45.0
# Sites considered per pass: more than any budget can run.
MAX_PER_PASS = 2000
# After the timeout's SIGTERM, SIGKILL this much later if PHP is still there.
KILL_AFTER_SECONDS = 5
# coreutils timeout: 124 when the command timed out, 128+9 when it had to be killed.
TIMED_OUT = (124, 137)
MARKER = "WPFLEET-CRON "
ERROR_CHARS = 500
# PHP's log line of an error that ended the run (after the log's timestamp, if any).
_PHP_ERROR = re.compile(r"PHP [A-Za-z ]*error:\s.*")

# LOAD_WORDPRESS without its silenced wp_mail(): the site's own cron events
# (newsletters, notifications, a shop's mails) must send their mail.
_LOAD = "\n".join(line for line in LOAD_WORDPRESS.splitlines() if not line.lstrip().startswith("function wp_mail("))

# wp-cron.php (WordPress 6.x), as a CLI run: the same lock (the doing_cron
# transient, so a run never overlaps another one or a request to
# wp-cron.php), each due event rescheduled or unscheduled, then fired.
# The marker line says how many events ran; its absence (a hook called
# exit, WordPress died) is a failure.
CRON_PHP = (
    "define('DOING_CRON', true);\n"
    + _LOAD
    + r"""
function wpfleet_cron_done($ran, $state) { echo "\nWPFLEET-CRON ", json_encode(['ran' => $ran, 'state' => $state]), "\n"; }
function wpfleet_cron_lock() {
    global $wpdb;
    if (wp_using_ext_object_cache()) { return wp_cache_get('doing_cron', 'transient', true); }
    $row = $wpdb->get_row($wpdb->prepare("SELECT option_value FROM $wpdb->options WHERE option_name = %s LIMIT 1", '_transient_doing_cron'));
    return is_object($row) ? $row->option_value : 0;
}
$crons = wp_get_ready_cron_jobs();
if (empty($crons)) { wpfleet_cron_done(0, 'idle'); exit(0); }
$gmt_time = microtime(true);
$held = get_transient('doing_cron');
if ($held && $held + WP_CRON_LOCK_TIMEOUT > $gmt_time) { wpfleet_cron_done(0, 'locked'); exit(0); }
$doing_wp_cron = sprintf('%.22F', microtime(true));
set_transient('doing_cron', $doing_wp_cron);
$ran = 0;
$state = 'done';
foreach ($crons as $timestamp => $cronhooks) {
    if ($timestamp > $gmt_time) { break; }
    foreach ($cronhooks as $hook => $keys) {
        foreach ($keys as $k => $v) {
            if ($v['schedule']) {
                $result = wp_reschedule_event($timestamp, $v['schedule'], $hook, $v['args'], true);
                if (is_wp_error($result)) { do_action('cron_reschedule_event_error', $result, $hook, $v); }
            }
            $result = wp_unschedule_event($timestamp, $hook, $v['args'], true);
            if (is_wp_error($result)) { do_action('cron_unschedule_event_error', $result, $hook, $v); }
            do_action_ref_array($hook, $v['args']);
            $ran++;
            // The hook ran so long that another run took the lock: leave the rest to it.
            if (wpfleet_cron_lock() !== $doing_wp_cron) { $state = 'lock lost'; break 3; }
        }
    }
}
if (wpfleet_cron_lock() === $doing_wp_cron) { delete_transient('doing_cron'); }
wpfleet_cron_done($ran, $state);
"""
)


@dataclass(frozen=True)
class CronResult:
    """One run of a site's cron. ``error`` is short and redacted; ``flagged``: this failure flagged the site."""

    site: str
    ok: bool
    events: int = 0
    state: str = ""  # idle (nothing due), done, locked (another run held WordPress's lock), lock lost
    seconds: float = 0.0
    error: str = ""
    flagged: bool = False


# --- the schedule ---------------------------------------------------------------------------


def next_slot(site: str, after: dt.datetime) -> dt.datetime:
    """The site's next cron time after ``after``: its own offset within each interval, from its name."""
    period = int(settings.WPFLEET_CRON_INTERVAL_SECONDS)
    offset = zlib.crc32(site.encode()) % period
    seconds = int(after.timestamp())
    slot = seconds - (seconds % period) + offset
    if slot <= seconds:
        slot += period
    return dt.datetime.fromtimestamp(slot, tz=dt.UTC)


def claim_due(site: str, now: dt.datetime) -> dt.datetime:
    """Where a claim moves a site's due time: its first slot after any run started now has ended,
    so that no other pass can claim it while this run may still be going."""
    return next_slot(site, now + dt.timedelta(seconds=settings.WPFLEET_CRON_TIMEOUT_SECONDS + KILL_AFTER_SECONDS))


def _runnable(now: dt.datetime) -> QuerySet[Site]:
    """Sites whose cron may run: ACTIVE, held by no job nor by a live repair, not flagged."""
    return Site.objects.filter(
        status=Site.Status.ACTIVE,
        current_job__isnull=True,
        cron_failures__lt=settings.WPFLEET_CRON_MAX_FAILURES,
    ).filter(Q(repairing_since__isnull=True) | Q(repairing_since__lt=now - REPAIR_LEASE))


def _plan_unplanned(now: dt.datetime) -> None:
    """Give sites without a due time their first one: spread over the interval, not all now."""
    unplanned = Site.objects.filter(status=Site.Status.ACTIVE, cron_due_at__isnull=True)
    for pk, name in unplanned.values_list("pk", "name")[:MAX_PER_PASS]:
        Site.objects.filter(pk=pk, cron_due_at__isnull=True).update(cron_due_at=next_slot(name, now))


# The serialized array WordPress keeps its events in (the option "cron") is
# sorted by time: its first key is the earliest event's timestamp.
_FIRST_EVENT = re.compile(r"^a:\d+:\{i:(\d+);")


def next_event(schedule: str) -> int | None:
    """The earliest scheduled event's time (Unix seconds) in a site's ``cron`` option; None when none is scheduled."""
    match = _FIRST_EVENT.match(schedule)
    return int(match.group(1)) if match else None


def _postpone_idle(due: list[tuple[int, str]], infra: Infra, now: dt.datetime) -> tuple[list[tuple[int, str]], int]:
    """Move on, without a run, the due sites whose next event is not due yet; (the sites to run, how many moved).

    A run loads WordPress in the site's container (a docker exec and a PHP
    start) to find, most of the time, that nothing is due: at a thousand
    sites, more work than one host's worker can do every interval. The
    events' times are in the site's database: read in one connection for
    all, a site whose earliest event lies ahead is given its first slot
    after that event (one with no event at all, a slot an idle interval
    ahead). A site whose schedule cannot be read runs as before.
    """
    schedules = infra.db.cron_schedules([f"wp_{name}" for _, name in due])
    runnable, moved = [], 0
    for pk, name in due:
        schedule = schedules.get(f"wp_{name}")
        if schedule is None:
            runnable.append((pk, name))
            continue
        event = next_event(schedule)
        if event is not None and event <= now.timestamp():
            runnable.append((pk, name))
            continue
        after = (
            dt.datetime.fromtimestamp(event - 1, tz=dt.UTC)
            if event is not None
            else now + dt.timedelta(seconds=settings.WPFLEET_CRON_IDLE_SECONDS)
        )
        moved += _runnable(now).filter(pk=pk, cron_due_at__lte=now).update(cron_due_at=next_slot(name, after))
    return runnable, moved


def _claim(pk: int, name: str, now: dt.datetime) -> bool:
    """The conditional UPDATE: only one pass moves a due site's time on, and only that one runs it."""
    return _runnable(now).filter(pk=pk, cron_due_at__lte=now).update(cron_due_at=claim_due(name, now)) == 1


def run_due_crons(
    infra: Infra | None = None,
    *,
    budget: float = BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, int]:
    """Housekeeping (every minute): run the due sites' cron, a few at a time, within the budget.

    Returns {"ran", "failed", "flagged", "left"} (left: still due, for the
    next pass), or {} when nothing was due.
    """
    started_at = clock()
    now = timezone.now()
    _plan_unplanned(now)
    due = list(
        _runnable(now)
        .filter(cron_due_at__lte=now)
        .order_by("cron_due_at", "pk")
        .values_list("pk", "name")[:MAX_PER_PASS]
    )
    if not due:
        return {}
    infra = infra or Infra()
    # The engine down would fail (and soon flag) every site: a pass that cannot start is not done at all.
    infra.docker.ping()
    counts = {"ran": 0, "failed": 0, "flagged": 0}
    due, counts["not_due"] = _postpone_idle(due, infra, now)
    pending: dict[Future[CronResult], Site] = {}

    def collect(done: set[Future[CronResult]]) -> None:
        for future in done:
            site = pending.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # a bug, not the site's: still one failure of its cron
                outcome = CronResult(site.name, ok=False, error=f"{exc.__class__.__name__}: {exc}")
            result = _record(site, outcome)
            counts["ran" if result.ok else "failed"] += 1
            counts["flagged"] += int(result.flagged)

    queue = iter(due)
    with ThreadPoolExecutor(max_workers=settings.WPFLEET_CRON_PARALLEL, thread_name_prefix="cron") as pool:
        while True:
            if len(pending) >= settings.WPFLEET_CRON_PARALLEL:
                collect(wait(pending, return_when=FIRST_COMPLETED).done)
                continue
            if clock() - started_at >= budget:
                break
            entry = next(queue, None)
            if entry is None:
                break
            pk, name = entry
            if not _claim(pk, name, timezone.now()):
                continue  # another pass took it, a job took the site, or it is no longer due
            site = Site.objects.filter(pk=pk).first()
            if site is None:
                continue
            pending[pool.submit(_execute, site, infra.docker)] = site
        while pending:
            collect(wait(pending, return_when=FIRST_COMPLETED).done)
    counts["left"] = _runnable(now).filter(cron_due_at__lte=now).count()
    return counts


# --- one run --------------------------------------------------------------------------------


def run_cron(site: Site, infra: Infra | None = None) -> CronResult:
    """Run the site's due cron events now and record the outcome on the site (no checks: see run_cron_now)."""
    infra = infra or Infra()
    return _record(site, _execute(site, infra.docker))


def run_cron_now(site: Site, infra: Infra | None = None) -> CronResult:
    """An operator's run (admin, API): the site must be ACTIVE and held by no job. Success clears a flag."""
    site.refresh_from_db()
    if site.status != Site.Status.ACTIVE:
        raise SiteNotActive(f"site {site.name} is {site.get_status_display()}, not active")
    if site.current_job_id is not None:
        raise SiteBusy(f"site {site.name} already has a job in progress")
    return run_cron(site, infra)


def clear_cron_flag(site: Site) -> None:
    """Forget the site's cron failures: it is run again, at the next pass."""
    now = timezone.now()
    Site.objects.filter(pk=site.pk).update(cron_failures=0, cron_error="", cron_due_at=now)
    site.cron_failures, site.cron_error, site.cron_due_at = 0, "", now
    log.info("site %s: cron flag cleared", site.name)


def _execute(site: Site, docker: DockerHost) -> CronResult:
    """The run itself, in the site's PHP container; touches no database of the panel (runs in a thread)."""
    limit = settings.WPFLEET_CRON_TIMEOUT_SECONDS
    argv = ["timeout", "-k", str(KILL_AFTER_SECONDS), str(limit), "php", "-r", CRON_PHP]
    start = time.monotonic()
    try:
        code, output = docker.exec(
            site.names.php, argv, user="www-data", environment={"WPFLEET_HOST": site.home_host(desired=False)}
        )
    except InfraError as exc:
        return CronResult(site.name, ok=False, seconds=time.monotonic() - start, error=str(exc))
    seconds = round(time.monotonic() - start, 3)
    if code in TIMED_OUT:
        return CronResult(site.name, ok=False, seconds=seconds, error=f"timed out after {limit} s (stopped)")
    answer = _marker(output)
    if code != 0 or answer is None:
        why = f"exit {code}" if code != 0 else "stopped early (exit 0 without the end marker: did a hook exit?)"
        return CronResult(site.name, ok=False, seconds=seconds, error=f"{why}: {_tail(output)}".rstrip(": "))
    return CronResult(
        site.name, ok=True, events=int(answer.get("ran", 0)), state=str(answer.get("state", "")), seconds=seconds
    )


def _marker(output: str) -> dict | None:
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            try:
                answer = json.loads(line[len(MARKER) :])
            except ValueError:
                return None
            return answer if isinstance(answer, dict) else None
    return None


def _tail(output: str) -> str:
    """What PHP said about the failure, on one line: its last error if it logged one (a fatal
    error's message), else the output's last lines (WordPress's error page, without its HTML)."""
    lines = [line for line in (strip_tags(raw).strip() for raw in output.splitlines()) if line]
    errors = [found.group(0) for line in lines if (found := _PHP_ERROR.search(line))]
    text = " | ".join(errors[-1:] or lines[-3:])
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _record(site: Site, result: CronResult) -> CronResult:
    """Store the outcome on the site; a failure's message is redacted first."""
    now = timezone.now()
    rows = Site.objects.filter(pk=site.pk)
    if result.ok:
        rows.update(cron_ran_at=now, cron_failures=0, cron_error="")
        site.cron_ran_at, site.cron_failures, site.cron_error = now, 0, ""
        return result
    error = redact(result.error, site.secrets())[: ERROR_CHARS + 100]
    if rows.filter(current_job__isnull=False).exists() or not rows.filter(status=Site.Status.ACTIVE).exists():
        # A job took the site meanwhile (a suspend, a PHP switch stopping
        # the container the run was in): the run was cut, not the site's
        # cron at fault. Not counted; it runs again at its next slot.
        rows.update(cron_error=error)
        site.cron_error = error
        return replace(result, error=error)
    rows.update(cron_failures=F("cron_failures") + 1, cron_error=error)
    failures = rows.values_list("cron_failures", flat=True).first() or 0
    site.cron_failures, site.cron_error = failures, error
    flagged = failures == settings.WPFLEET_CRON_MAX_FAILURES
    if flagged:
        log.warning(
            "site %s: cron failed %d times in a row, no longer run until cleared: %s", site.name, failures, error
        )
    return replace(result, error=error, flagged=flagged)
