"""On the real lab: WordPress cron is run by the worker, never by visits (sites.ops.cron).

A tiny must-use plugin dropped into the test's site gives WordPress a hook
that records its run (the option ``wpfleet_test_cron``), records visits
that reach PHP, and breaks the cron run on demand (a fatal error quoting
the database password, ``exit(1)``, or a sleep past the timeout).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from sites.models import Site
from sites.ops.cron import CronResult, clear_cron_flag, run_cron, run_due_crons
from sites.ops.wordpress import LOAD_WORDPRESS
from sites.provisioning.steps import WWW_DATA
from sites.provisioning.templates import CRON_PLUGIN, CRON_PLUGIN_PATH
from tests.integration.conftest import fetch, start_cluster, stop_cluster, wait_for

pytestmark = [pytest.mark.integration]

MU_PLUGINS = CRON_PLUGIN_PATH.rsplit("/", 1)[0]
TEST_PLUGIN = r"""<?php
/* Plugin Name: wpfleet cron test (tests/integration/test_cron.py) */
add_action('wpfleet_test_cron', function () { update_option('wpfleet_test_cron', time()); });
add_action('init', function () {
    if (!defined('DOING_CRON')) { return; }
    $mode = get_option('wpfleet_test_cron_mode');
    if ($mode === 'fatal') { throw new RuntimeException('cron broke near ' . DB_PASSWORD); }
    if ($mode === 'exit') { exit(1); }
    if ($mode === 'sleep') { sleep(600); }
});
add_action('shutdown', function () {
    if (PHP_SAPI !== 'cli') { update_option('wpfleet_test_visited', time()); }
});
"""


@pytest.fixture
def live_site(make_site, infra) -> Site:
    site = make_site()
    assert site.status == Site.Status.ACTIVE, site.last_job.error
    container = infra.docker.container(site.names.php)
    infra.docker.put_files(
        container, MU_PLUGINS, {"wpfleet-test-cron.php": (TEST_PLUGIN.encode(), 0o644, WWW_DATA, WWW_DATA)}
    )
    return site


def wordpress(infra, site: Site, code: str):
    """Run PHP with the site's WordPress loaded (CLI, as www-data); the value it echoes as JSON."""
    status, output = infra.docker.exec(
        site.names.php,
        ["php", "-r", LOAD_WORDPRESS + 'echo "\\nRESULT ", json_encode(' + code + '), "\\n";'],
        user="www-data",
        environment={"WPFLEET_HOST": site.domain},
    )
    assert status == 0, output
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


def schedule_test_event(infra, site: Site) -> None:
    """A single event of the test hook, due a minute ago."""
    assert wordpress(infra, site, "wp_schedule_single_event(time() - 60, 'wpfleet_test_cron')") is True
    assert wordpress(infra, site, "(bool) wp_next_scheduled('wpfleet_test_cron')") is True


def set_mode(infra, site: Site, mode: str) -> None:
    wordpress(infra, site, f"update_option('wpfleet_test_cron_mode', '{mode}')")


def make_due(site: Site) -> None:
    Site.objects.filter(pk=site.pk).update(cron_due_at=timezone.now() - dt.timedelta(seconds=1))


def test_a_visit_runs_no_cron_and_the_worker_runs_a_due_event_by_itself(live_site, infra):
    assert infra.docker.read_file(live_site.names.php, CRON_PLUGIN_PATH) == CRON_PLUGIN
    assert wordpress(infra, live_site, "defined('DISABLE_WP_CRON') && DISABLE_WP_CRON") is True
    schedule_test_event(infra, live_site)

    # A visit that reaches PHP (a query string: never from the page cache)...
    assert fetch(live_site.name, "/?cron-test=1").status_code == 200
    wait_for(lambda: wordpress(infra, live_site, "get_option('wpfleet_test_visited')"), 10, 0.2, "the visit")
    # ...neither ran the due event nor even tried to spawn cron (spawn_cron takes the doing_cron lock first).
    assert wordpress(infra, live_site, "get_option('wpfleet_test_cron')") is False
    assert wordpress(infra, live_site, "get_transient('doing_cron')") is False
    assert wordpress(infra, live_site, "(bool) wp_next_scheduled('wpfleet_test_cron')") is True

    # The worker (manage.py run_worker: its housekeeping) runs the site's cron when it is due.
    make_due(live_site)
    cluster = start_cluster()
    try:
        wait_for(lambda: Site.objects.get(pk=live_site.pk).cron_ran_at, 90, 0.5, "the worker's cron run")
    finally:
        stop_cluster(cluster)
    site = Site.objects.get(pk=live_site.pk)
    assert (site.cron_failures, site.cron_error) == (0, "")
    assert site.cron_due_at > timezone.now()  # its next slot
    assert wordpress(infra, live_site, "(int) get_option('wpfleet_test_cron')") > 0
    assert wordpress(infra, live_site, "wp_next_scheduled('wpfleet_test_cron')") is False  # a single event: gone
    assert wordpress(infra, live_site, "get_transient('doing_cron')") is False  # the lock was given back


def test_run_due_crons_counts_failures_flags_the_site_and_skips_it_until_cleared(live_site, infra, settings):
    settings.WPFLEET_CRON_MAX_FAILURES = 3
    schedule_test_event(infra, live_site)
    set_mode(infra, live_site, "fatal")
    reports = []
    for _ in range(3):
        make_due(live_site)
        reports.append(run_due_crons())
    assert [(r["ran"], r["failed"], r["flagged"]) for r in reports] == [(0, 1, 0), (0, 1, 0), (0, 1, 1)]
    site = Site.objects.get(pk=live_site.pk)
    assert site.cron_failures == 3 and site.cron_flagged and site.cron_ran_at is None
    # PHP's own message, with the database password it quoted redacted.
    assert (
        site.cron_error.startswith("exit 255: ")
        and "Uncaught RuntimeException: cron broke near [redacted]" in site.cron_error
    )
    assert site.db_password not in site.cron_error

    # Flagged: no longer run, however due; its event waits.
    make_due(live_site)
    assert run_due_crons() == {}
    assert Site.objects.get(pk=live_site.pk).cron_failures == 3
    assert wordpress(infra, live_site, "(bool) wp_next_scheduled('wpfleet_test_cron')") is True

    # Fixed and cleared: the next pass runs the event.
    set_mode(infra, live_site, "")
    clear_cron_flag(site)
    assert run_due_crons()["ran"] == 1
    site = Site.objects.get(pk=live_site.pk)
    assert (site.cron_failures, site.cron_error, site.cron_flagged) == (0, "", False) and site.cron_ran_at
    assert wordpress(infra, live_site, "(int) get_option('wpfleet_test_cron')") > 0

    # A hook that exits with a status is a failure too.
    set_mode(infra, live_site, "exit")
    result = run_cron(site)
    assert not result.ok and result.error.startswith("exit 1")
    assert Site.objects.get(pk=live_site.pk).cron_failures == 1


def test_a_cron_past_its_timeout_is_stopped_inside_the_container(live_site, infra, settings):
    settings.WPFLEET_CRON_TIMEOUT_SECONDS = 3
    set_mode(infra, live_site, "sleep")
    # The run's PHP, found by its command line (the pattern does not match grep's own).
    find_php = ["sh", "-c", "grep -l 'DOING_[C]RON' /proc/[0-9]*/cmdline"]
    results: list[CronResult] = []

    def run() -> None:
        try:
            results.append(run_cron(live_site))
        finally:
            connection.close()  # this thread's

    started = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: infra.docker.exec(live_site.names.php, find_php)[0] == 0, 10, 0.1, "the run's PHP")
    thread.join(60)
    assert not thread.is_alive()
    [result] = results
    assert not result.ok and result.error == "timed out after 3 s (stopped)"
    assert time.monotonic() - started < 60  # not the hook's 600 s
    # Gone from the container, not only from the docker exec client's view.
    status, output = infra.docker.exec(live_site.names.php, find_php)
    assert status == 1, output
    assert Site.objects.get(pk=live_site.pk).cron_failures == 1


def test_a_site_whose_events_all_lie_ahead_is_not_run_and_waits_for_its_earliest_event(live_site, infra):
    make_due(live_site)
    assert run_due_crons()["ran"] == 1  # a new site's update checks are due at once
    earliest = wordpress(infra, live_site, "array_key_first(_get_cron_array())")
    assert earliest > timezone.now().timestamp()  # everything left lies ahead (the hourly events)

    make_due(live_site)
    report = run_due_crons()

    assert (report["ran"], report["not_due"]) == (0, 1)
    site = Site.objects.get(pk=live_site.pk)
    assert site.cron_due_at.timestamp() >= earliest and site.cron_ran_at is not None
    # Once the earliest event is due, the site runs again.
    wordpress(infra, live_site, "wp_schedule_single_event(time() - 60, 'wpfleet_test_cron')")
    make_due(live_site)
    assert run_due_crons()["ran"] == 1
    assert wordpress(infra, live_site, "(int) get_option('wpfleet_test_cron')") > 0
