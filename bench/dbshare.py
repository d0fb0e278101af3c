"""How much of an uncached page is spent waiting for the database: what an object cache could save at most.

An object cache (Redis) answers WordPress's cache lookups instead of
MariaDB; the most it can take off a page is the time of the page's queries.
This probe, run on a bench site only, turns on WordPress's SAVEQUERIES (a
line in the site's wp-config.php) and writes a must-use plugin that, at the
end of each request carrying ``?benchdb=``, appends to a file in the
container: the number of queries, the sum of their times (wpdb times each
query around the call to MariaDB) and the request's time in PHP so far
(from ``REQUEST_TIME_FLOAT``). SAVEQUERIES itself adds a backtrace per
query, so the PHP time is a little longer than without it; the query
times are not. Not counted: connecting to MariaDB (an object cache
connects to Redis instead).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable

from sites.infra.docker_host import DockerHost

PLUGIN_PATH = "/var/www/html/wp-content/mu-plugins/wpfleet-bench-db.php"
LOG = "/tmp/wpfleet-bench-db.log"
PLUGIN = (
    r"""<?php
// wpfleet bench probe (bench/dbshare.py): never installed on a real site.
register_shutdown_function(function () {
    if (!isset($_GET['benchdb']) || !defined('SAVEQUERIES') || !SAVEQUERIES) {
        return;
    }
    global $wpdb;
    $times = array_map(function ($query) { return (float) $query[1]; }, (array) $wpdb->queries);
    $line = json_encode([
        'queries' => count($times),
        'db_ms' => 1000 * array_sum($times),
        'php_ms' => 1000 * (microtime(true) - $_SERVER['REQUEST_TIME_FLOAT']),
    ]);
    file_put_contents('"""
    + LOG
    + r"""', $line . "\n", FILE_APPEND | LOCK_EX);
});
"""
)
# Before wp-settings.php loads (and connects): every query of the request is kept.
_SAVEQUERIES = (
    "grep -q \"define('SAVEQUERIES'\" /var/www/html/wp-config.php || "
    "sed -i \"s|^require_once ABSPATH . 'wp-settings.php';|define('SAVEQUERIES', true);\\n&|\" /var/www/html/wp-config.php"
)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def database_share(docker: DockerHost, php_container: str, get: Callable[[str], object], requests: int) -> dict:
    """Install the probe, fetch ``/?benchdb=<i>`` ``requests`` times through ``get``, remove the probe; the figures."""
    from sites.provisioning.steps import WWW_DATA

    container = docker.container(php_container)
    if container is None:
        raise RuntimeError(f"{php_container} is missing")
    code, output = docker.exec(php_container, ["sh", "-c", _SAVEQUERIES], user="www-data")
    if code != 0:
        raise RuntimeError(f"SAVEQUERIES not set: {output[-300:]}")
    docker.put_files(
        container,
        PLUGIN_PATH.rsplit("/", 1)[0],
        {PLUGIN_PATH.rsplit("/", 1)[1]: (PLUGIN.encode(), 0o644, WWW_DATA, WWW_DATA)},
    )
    docker.exec(php_container, ["rm", "-f", LOG])
    try:
        for i in range(3):  # warm: the pool's child and its compiled scripts
            get(f"/?benchdb=warm{i}")
        docker.exec(php_container, ["rm", "-f", LOG])
        for i in range(requests):
            get(f"/?benchdb={i}")
        code, output = docker.exec(php_container, ["cat", LOG])
        samples = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    finally:
        docker.exec(php_container, ["rm", "-f", PLUGIN_PATH, LOG])
    if not samples:
        raise RuntimeError(f"no probe samples: {output[-300:]}")
    db = [s["db_ms"] for s in samples]
    php = [s["php_ms"] for s in samples]
    return {
        "what": "per uncached home page request, warm pool: MariaDB query time (sum of wpdb's per-query times, "
        "SAVEQUERIES on) against the request's time in PHP; connecting to MariaDB not counted",
        "requests": len(samples),
        "queries_p50": statistics.median(s["queries"] for s in samples),
        "db_ms_p50": _p(db, 0.5),
        "db_ms_p95": _p(db, 0.95),
        "php_ms_p50": _p(php, 0.5),
        "php_ms_p95": _p(php, 0.95),
        "db_share_p50": round(statistics.median(d / p for d, p in zip(db, php, strict=True) if p > 0), 3),
        "samples": samples,
    }
