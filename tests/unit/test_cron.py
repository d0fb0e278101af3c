"""WordPress cron without the lab: the schedule's spread, the claim, the budget, failures and the flag.

The Docker adapter is a fake that records each exec and answers as PHP
would (the marker line, an exit code, a timeout's 124, an engine error).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import zlib
from typing import cast

import pytest
from django.db import connection
from django.utils import timezone

from jobs import registry
from sites.infra.errors import InfraError
from sites.models import Site, SiteBusy
from sites.ops import cron
from sites.ops.cron import (
    CRON_PHP,
    clear_cron_flag,
    next_event,
    next_slot,
    run_cron,
    run_cron_now,
    run_due_crons,
)
from sites.ops.wordpress import SiteNotActive
from sites.provisioning.steps import Infra

pytestmark = pytest.mark.django_db(transaction=True)


def done(ran: int = 1) -> tuple[int, str]:
    return 0, "some plugin's chatter\n" + cron.MARKER + json.dumps({"ran": ran, "state": "done"})


class FakeDocker:
    """Records each exec; ``answer(container)`` gives (exit code, output) or raises."""

    def __init__(self, answer=None):
        self.answer = answer or (lambda container: done())
        self.calls: list[dict] = []
        self._lock = threading.Lock()

    def ping(self) -> None:
        pass

    def exec(self, container, argv, *, user="", environment=None):
        with self._lock:
            self.calls.append({"container": container, "argv": argv, "user": user, "environment": environment})
        return self.answer(container)

    def ran(self) -> list[str]:
        return sorted(call["container"].removeprefix("php_") for call in self.calls)


class FakeDb:
    """The sites' schedules (their "cron" option) by database; a database not given is unreadable."""

    def __init__(self, schedules: dict[str, str] | None = None):
        self.schedules = schedules or {}

    def cron_schedules(self, databases: list[str]) -> dict[str, str]:
        return {db: self.schedules[db] for db in databases if db in self.schedules}


class _Adapters:
    def __init__(self, docker: FakeDocker, db: FakeDb):
        self.docker = docker
        self.db = db


def fake_infra(docker: FakeDocker, db: FakeDb | None = None) -> Infra:
    """The project's Infra with only its Docker and MariaDB adapters, fakes (no schedule readable: every due site runs)."""
    return cast(Infra, _Adapters(docker, db or FakeDb()))


def schedule(*times: int) -> str:
    """A "cron" option as WordPress serializes it: events by time, sorted, then the version."""
    events = "".join(f'i:{t};a:1:{{s:9:"wp_hourly";a:0:{{}}}}' for t in sorted(times))
    return f'a:{len(times) + 1}:{{{events}s:7:"version";i:2;}}'


def active_site(name: str, **fields) -> Site:
    return Site.objects.create(name=name, domain=f"{name}.wpfleet.test", status=Site.Status.ACTIVE, **fields)


def due_site(name: str, **fields) -> Site:
    return active_site(name, cron_due_at=timezone.now() - dt.timedelta(seconds=1), **fields)


def make_due(*sites: Site) -> None:
    Site.objects.filter(pk__in=[s.pk for s in sites]).update(cron_due_at=timezone.now() - dt.timedelta(seconds=1))


def fresh(site: Site) -> Site:
    return Site.objects.get(pk=site.pk)


# --- the schedule ---------------------------------------------------------------------------


def test_a_sites_slot_is_its_own_offset_in_the_interval_and_always_ahead(settings):
    settings.WPFLEET_CRON_INTERVAL_SECONDS = 300
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for name in ("alpha", "beta", "gamma", "delta"):
        offset = zlib.crc32(name.encode()) % 300
        for after in (start, start + dt.timedelta(seconds=offset), start + dt.timedelta(seconds=1234.5)):
            slot = next_slot(name, after)
            assert after < slot <= after + dt.timedelta(seconds=300)
            assert int(slot.timestamp()) % 300 == offset
    # Different names land on different offsets: the fleet is spread over the interval.
    offsets = {zlib.crc32(f"site{i}".encode()) % 300 for i in range(50)}
    assert len(offsets) > 35


def test_sites_without_a_due_time_get_their_spread_slot_instead_of_all_running_now(settings):
    settings.WPFLEET_CRON_INTERVAL_SECONDS = 300
    docker = FakeDocker()
    before = timezone.now()
    sites = [active_site(f"site{i}") for i in range(20)]
    report = run_due_crons(fake_infra(docker))
    assert docker.calls == [] and report == {}
    for site in sites:
        due = fresh(site).cron_due_at
        assert due is not None and due > before
        assert due == next_slot(site.name, due - dt.timedelta(seconds=300))  # on its own grid
    assert len({fresh(site).cron_due_at for site in sites}) > 15


def test_a_due_site_runs_php_as_www_data_under_timeout_with_its_host_in_the_environment(settings):
    settings.WPFLEET_CRON_TIMEOUT_SECONDS = 120
    site = due_site("alpha", home_domain="www.example.com")
    docker = FakeDocker()
    report = run_due_crons(fake_infra(docker))
    assert report == {"ran": 1, "failed": 0, "flagged": 0, "left": 0, "not_due": 0}
    [call] = docker.calls
    assert call["container"] == "php_alpha" and call["user"] == "www-data"
    assert call["argv"] == ["timeout", "-k", "5", "120", "php", "-r", CRON_PHP]
    assert call["environment"] == {"WPFLEET_HOST": "www.example.com"}  # the host WordPress calls home
    after = fresh(site)
    assert after.cron_ran_at is not None and (after.cron_failures, after.cron_error) == (0, "")
    # Claimed: moved to its next slot after any run started now has ended.
    assert after.cron_due_at > after.cron_ran_at + dt.timedelta(seconds=120)
    assert after.cron_due_at == next_slot("alpha", after.cron_due_at - dt.timedelta(seconds=300))


def test_the_php_runs_wordpress_cron_with_mail_working():
    assert CRON_PHP.index("define('DOING_CRON', true);") < CRON_PHP.index("wp-load.php")
    assert "getenv('WPFLEET_HOST')" in CRON_PHP
    # The panel's own operations silence mail; the site's cron events must send theirs.
    assert "wp_mail" not in CRON_PHP
    assert "wp_get_ready_cron_jobs()" in CRON_PHP and "do_action_ref_array($hook, $v['args'])" in CRON_PHP


def test_a_run_reports_the_events_it_ran():
    site = active_site("alpha")
    result = run_cron(site, fake_infra(FakeDocker(lambda c: done(ran=3))))
    assert (result.ok, result.events, result.state, result.flagged) == (True, 3, "done", False)


# --- who runs -------------------------------------------------------------------------------


def test_only_active_sites_that_no_job_or_repair_holds_are_run():
    due_site("ready")
    held = due_site("held")
    held.open_job(Site.JobType.BACKUP)
    due_site("repairing", repairing_since=timezone.now())
    due_site("stalerepair", repairing_since=timezone.now() - dt.timedelta(hours=1))  # its worker died
    for status in (Site.Status.PROVISIONING, Site.Status.SUSPENDED, Site.Status.DEPROVISIONING):
        Site.objects.create(
            name=status.lower(), domain="x.wpfleet.test", status=status, cron_due_at=timezone.now() - dt.timedelta(1)
        )
    docker = FakeDocker()
    report = run_due_crons(fake_infra(docker))
    assert docker.ran() == ["ready", "stalerepair"]
    assert report == {"ran": 2, "failed": 0, "flagged": 0, "left": 0, "not_due": 0}


def test_a_site_not_yet_due_is_not_run():
    active_site("later", cron_due_at=timezone.now() + dt.timedelta(minutes=2))
    docker = FakeDocker()
    assert run_due_crons(fake_infra(docker)) == {} and docker.calls == []


def test_an_overlapping_pass_never_runs_a_site_the_first_one_claimed(settings):
    settings.WPFLEET_CRON_PARALLEL = 1
    sites = [due_site(name) for name in ("alpha", "beta", "gamma")]
    nested: list[dict] = []
    runs: list[str] = []

    def answer(container):
        runs.append(container)
        if not nested:
            # A second housekeeping pass starts while the first one's first run is going.
            nested.append({})
            try:
                nested[0] = run_due_crons(fake_infra(docker))
            finally:
                connection.close()  # this thread's connection
        return done()

    docker = FakeDocker(answer)
    first = run_due_crons(fake_infra(docker))
    # Each site ran exactly once, by one pass or the other.
    assert sorted(runs) == ["php_alpha", "php_beta", "php_gamma"]
    assert first["ran"] + nested[0]["ran"] == 3
    assert nested[0]["ran"] == 2  # the nested pass took the two the first had not claimed yet
    assert all(fresh(site).cron_ran_at is not None for site in sites)


def test_a_pass_starts_no_run_after_its_budget_and_the_rest_stay_due(settings):
    settings.WPFLEET_CRON_PARALLEL = 1
    for i in range(6):
        due_site(f"site{i}")
    now = [0.0]

    def answer(container):
        now[0] += 20  # each run takes 20 (fake) seconds
        return done()

    docker = FakeDocker(answer)
    report = run_due_crons(fake_infra(docker), budget=45, clock=lambda: now[0])
    # Started at 0, 20 and 40; at 60 the budget is spent.
    assert report == {"ran": 3, "failed": 0, "flagged": 0, "left": 3, "not_due": 0}
    left = Site.objects.filter(cron_due_at__lte=timezone.now())
    assert left.count() == 3 and not left.filter(cron_ran_at__isnull=False).exists()
    # The next pass runs the rest.
    assert run_due_crons(fake_infra(docker))["ran"] == 3


def test_parallel_runs_are_bounded(settings):
    settings.WPFLEET_CRON_PARALLEL = 2
    for i in range(6):
        due_site(f"site{i}")
    gate = threading.Lock()
    busy = [0, 0]  # now, most

    def answer(container):
        with gate:
            busy[0] += 1
            busy[1] = max(busy)
        time.sleep(0.05)  # long enough for the runs to overlap (nothing asserts on time)
        with gate:
            busy[0] -= 1
        return done()

    assert run_due_crons(fake_infra(FakeDocker(answer)))["ran"] == 6
    assert busy[1] == 2


# --- failures and the flag ------------------------------------------------------------------


def test_failures_count_then_flag_the_site_which_is_skipped_until_cleared(settings, caplog):
    settings.WPFLEET_CRON_MAX_FAILURES = 3
    site = due_site("alpha")
    other = due_site("beta")
    password = site.db_password
    fatal = f"PHP Fatal error:  Uncaught mysqli_sql_exception: Access denied (using password {password}) in /var/www/html/wp-content/plugins/x.php:12"
    broken = {"php_alpha"}
    docker = FakeDocker(lambda c: (255, fatal) if c in broken else done())
    reports = []
    with caplog.at_level(logging.WARNING, logger="wpfleet.cron"):
        for _ in range(3):
            make_due(site, other)
            reports.append(run_due_crons(fake_infra(docker)))
    assert [r["failed"] for r in reports] == [1, 1, 1]
    assert [r["flagged"] for r in reports] == [0, 0, 1]
    flagged = fresh(site)
    assert flagged.cron_failures == 3 and flagged.cron_flagged
    assert flagged.cron_error.startswith("exit 255: PHP Fatal error:")
    assert "[redacted]" in flagged.cron_error and password not in flagged.cron_error
    assert [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()] == [
        f"site alpha: cron failed 3 times in a row, no longer run until cleared: {flagged.cron_error}"
    ]
    assert fresh(other).cron_failures == 0  # one broken site does not stop the others

    # Flagged: skipped, however due.
    docker.calls.clear()
    make_due(site, other)
    assert run_due_crons(fake_infra(docker))["ran"] == 1
    assert docker.ran() == ["beta"] and fresh(site).cron_failures == 3

    # Cleared, and the site fixed: it runs at the next pass and its record is clean.
    broken.clear()
    clear_cron_flag(site)
    assert (site.cron_failures, site.cron_error) == (0, "")
    docker.calls.clear()
    assert run_due_crons(fake_infra(docker))["ran"] == 1
    assert docker.ran() == ["alpha"]
    after = fresh(site)
    assert (after.cron_failures, after.cron_error, after.cron_flagged) == (0, "", False)


def test_a_success_resets_the_failures_in_a_row():
    site = due_site("alpha", cron_failures=2, cron_error="exit 1: earlier")
    run_due_crons(fake_infra(FakeDocker()))
    after = fresh(site)
    assert (after.cron_failures, after.cron_error) == (0, "")


@pytest.mark.parametrize(
    "answer,error",
    [
        ((124, ""), "timed out after 120 s (stopped)"),
        ((137, ""), "timed out after 120 s (stopped)"),
        ((1, "\n\nsomething broke\n"), "exit 1: something broke"),
        # PHP's fatal error (its log line on stderr) rather than WordPress's error page after it.
        (
            (
                255,
                "[26-Nov-2026 11:26:17 UTC] PHP Fatal error:  Uncaught Error: boom in /x.php:3\nStack trace:\n#0 {main}\n  thrown in /x.php on line 3\n"
                "<html><body><p>There has been a critical error on this website.</p></body></html>",
            ),
            "exit 255: PHP Fatal error:  Uncaught Error: boom in /x.php:3",
        ),
        (
            (255, "<html>\n<body><p>There has been a critical error.</p></body>\n</html>"),
            "exit 255: There has been a critical error.",
        ),
        ((0, "Error establishing a database connection"), "stopped early (exit 0 without the end marker"),
        ((0, cron.MARKER + "not json"), "stopped early"),
    ],
)
def test_a_timeout_an_exit_or_a_missing_marker_is_a_failure(settings, answer, error):
    settings.WPFLEET_CRON_TIMEOUT_SECONDS = 120
    site = due_site("alpha")
    report = run_due_crons(fake_infra(FakeDocker(lambda c: answer)))
    assert report["failed"] == 1
    after = fresh(site)
    assert after.cron_failures == 1 and after.cron_error.startswith(error) and after.cron_ran_at is None


def test_an_engine_error_is_a_failure_redacted_too():
    site = due_site("alpha")
    password = site.db_password

    def answer(container):
        raise InfraError("docker", f"exec in {container}: container is not running ({password})")

    assert run_due_crons(fake_infra(FakeDocker(answer)))["failed"] == 1
    error = fresh(site).cron_error
    assert error.startswith("docker: exec in php_alpha: container is not running") and password not in error


def test_a_pass_that_cannot_reach_the_engine_fails_without_counting_against_the_sites():
    site = due_site("alpha")

    class Down(FakeDocker):
        def ping(self):
            raise InfraError("docker", "ping: engine unreachable")

    with pytest.raises(InfraError):
        run_due_crons(fake_infra(Down()))
    after = fresh(site)
    assert after.cron_failures == 0 and after.cron_due_at <= timezone.now()  # still due


def test_a_long_error_is_cut_short():
    site = due_site("alpha")
    run_due_crons(fake_infra(FakeDocker(lambda c: (1, "x" * 10000))))
    assert len(fresh(site).cron_error) < 700


# --- by hand --------------------------------------------------------------------------------


def test_a_run_by_hand_needs_an_active_idle_site_and_a_success_clears_the_flag(settings):
    settings.WPFLEET_CRON_MAX_FAILURES = 3
    site = active_site("alpha", cron_failures=3, cron_error="exit 1: broken")
    assert site.cron_flagged
    result = run_cron_now(site, fake_infra(FakeDocker()))
    assert result.ok and not fresh(site).cron_flagged and fresh(site).cron_error == ""

    site.open_job(Site.JobType.BACKUP)
    with pytest.raises(SiteBusy):
        run_cron_now(site, fake_infra(FakeDocker()))
    building = Site.objects.create(name="beta", domain="beta.wpfleet.test")
    with pytest.raises(SiteNotActive):
        run_cron_now(building, fake_infra(FakeDocker()))


def test_a_failed_run_by_hand_of_a_flagged_site_warns_no_second_time(settings, caplog):
    settings.WPFLEET_CRON_MAX_FAILURES = 3
    site = active_site("alpha", cron_failures=3)
    with caplog.at_level(logging.WARNING, logger="wpfleet.cron"):
        result = run_cron_now(site, fake_infra(FakeDocker(lambda c: (1, "no"))))
    assert not result.ok and not result.flagged and fresh(site).cron_failures == 4
    assert not caplog.records


def test_clearing_the_flag_makes_the_site_due_now():
    site = active_site("alpha", cron_failures=5, cron_error="x", cron_due_at=timezone.now() - dt.timedelta(days=3))
    clear_cron_flag(site)
    after = fresh(site)
    assert (after.cron_failures, after.cron_error) == (0, "")
    assert after.cron_due_at is not None and after.cron_due_at <= timezone.now()


def test_housekeeping_runs_cron():
    assert registry.periodic()["cron"] is run_due_crons


# --- only sites with an event due are run -------------------------------------------------------


def test_the_earliest_event_is_read_from_the_serialized_schedule():
    assert next_event(schedule(1764000300, 1764000000)) == 1764000000
    assert next_event(schedule()) is None


def test_a_due_site_whose_events_all_lie_ahead_is_moved_to_its_slot_after_the_earliest_without_a_run(settings):
    ahead = int(timezone.now().timestamp()) + 1800
    site = due_site("quiet")
    docker = FakeDocker()

    report = run_due_crons(fake_infra(docker, FakeDb({"wp_quiet": schedule(ahead, ahead + 7200)})))

    assert docker.calls == [] and report["ran"] == 0 and report["not_due"] == 1
    due = fresh(site).cron_due_at
    assert due.timestamp() >= ahead and due == next_slot("quiet", dt.datetime.fromtimestamp(ahead - 1, tz=dt.UTC))


def test_a_site_with_nothing_scheduled_is_looked_at_again_an_idle_interval_later(settings):
    settings.WPFLEET_CRON_IDLE_SECONDS = 3600
    site = due_site("empty")
    run_due_crons(fake_infra(FakeDocker(), FakeDb({"wp_empty": schedule()})))
    assert fresh(site).cron_due_at >= timezone.now() + dt.timedelta(seconds=3600)


def test_a_site_with_an_event_due_or_an_unreadable_schedule_runs(settings):
    past = int(timezone.now().timestamp()) - 60
    due_site("busy")
    due_site("unknown")
    docker = FakeDocker()
    report = run_due_crons(fake_infra(docker, FakeDb({"wp_busy": schedule(past)})))
    assert docker.ran() == ["busy", "unknown"] and report["ran"] == 2 and report["not_due"] == 0
