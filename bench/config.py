"""What the bench runs (full or quick) and where: sizes, paths, the bench's own identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VAR = REPO / "var"
LOG_DIR = VAR / "log"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# The bench's identity: its own control database, owner label and web port,
# so that it neither sees nor cleans up anything of a panel or a test run.
DB_FILE = VAR / "bench.sqlite3"
OWNER = "wpfleet-bench"
FILLER_OWNER = "wpfleet-bench-filler"
# Filler hostnames (section fill) start with this: a hyphen, which no site name has.
FILLER_PREFIX = "bench-filler-"
WEB_BIND = "127.0.0.1:8100"
WEB_URL = f"http://{WEB_BIND}"
# Same shape as scripts/panel.sh, so API latency means what production sees.
WEB_WORKERS = 3
WEB_THREADS = 4
LOCK_FILE = VAR / "run" / "bench.lock"
# The bench's own restic repository (local, recreated at each run like the
# control database), used when the configuration has one (WPFLEET_BACKUP_REPOSITORY):
# the lab's repository is shared with the tests and any panel, and a fresh
# control database makes the bench's housekeeping open the daily repository
# maintenance (forget, prune: an exclusive lock) within its first minute.
# The password is the configuration's (WPFLEET_BACKUP_PASSWORD or _FILE).
BACKUP_REPOSITORY = VAR / "bench-restic"

SECTIONS = ("sequential", "concurrent", "api", "fill", "density", "backups", "serving", "operations", "scale")
# What runs without --only. `scale` (issue #14: real sites, `--fill N`, `make bench
# FILL=N`) supersedes `fill` (filler route files, no containers): neither is in it.
# `fill` still runs with --only fill.
DEFAULT_SECTIONS = ("sequential", "concurrent", "api", "density", "backups", "serving", "operations")
# Where `make bench FILL=N` writes (--out): the scale section's results apart from the others'.
SCALE_OUT = DEFAULT_OUT / "scale"


def backups_configured() -> bool:
    """Whether the configuration (environment or .env) has a backup repository."""
    from hosting.env import load

    return bool(load(REPO).raw("WPFLEET_BACKUP_REPOSITORY"))


def bench_env() -> dict[str, str]:
    """Variables set for the bench process and every child it starts."""
    env = {
        "DATABASE_URL": f"sqlite:///{DB_FILE}",
        "WPFLEET_OWNER": OWNER,
        "DJANGO_SETTINGS_MODULE": "hosting.settings",
    }
    if backups_configured():
        env["WPFLEET_BACKUP_REPOSITORY"] = str(BACKUP_REPOSITORY)
    return env


@dataclass(frozen=True)
class Plan:
    """Sizes of every section; QUICK_PLAN is the `make bench QUICK=1` variant."""

    quick: bool = False
    # Worker processes of the cluster for every section but the scaling runs
    # (the product's default, WPFLEET_WORKERS=4).
    workers: int = 4
    sequential_n: int = 10
    # (sites posted at once, worker processes)
    concurrent_runs: tuple[tuple[int, int], ...] = ((20, 1), (20, 2), (20, 4), (40, 4))
    api_clients: int = 50
    api_requests_per_client: int = 10
    fill_levels: tuple[int, ...] = (0, 100, 500, 1000)
    fill_sites_per_level: int = 5
    density_sites: int = 10
    # Section backups: bytes of random (incompressible) uploads in its second
    # site, written as this many files of equal size.
    backup_upload_bytes: int = 200 * 1024 * 1024
    backup_upload_files: int = 10
    # Section serving (issue #15): posts on the target's home page; cold-pool
    # samples (each after 11 s idle); warm TTFB samples (one connection); wrk's
    # seconds and connections for the uncached (a query string) and cached (/)
    # loads, and the cached load without Accept-Encoding; purge repetitions;
    # per opcache mode, warm TTFB samples and wrk's seconds.
    serving_posts: int = 10
    serving_cold_samples: int = 5
    serving_warm_requests: int = 200
    serving_load_seconds: int = 30
    serving_uncached_connections: int = 8
    serving_cached_connections: int = 64
    serving_identity_seconds: int = 10
    serving_purge_repetitions: int = 5
    serving_opcache_requests: int = 200
    serving_opcache_load_seconds: int = 10
    # Section operations (issue #13): sites suspended, resumed and switched
    # to the other PHP version and back, one at a time.
    operations_sites: int = 5
    # Section scale (issue #14): real sites built through the API up to
    # scale_fill (`--fill N`), measured at 0, fill/4, fill/2 and fill existing
    # sites (scale_levels); the dockerd SIGKILL after the last level only with
    # scale_restart (`--restart`).
    scale_fill: int = 1000
    scale_restart: bool = False
    # POST→ACTIVE samples per level, one at a time (they stay: they count toward the fill).
    scale_samples: int = 10
    # Worker processes of the cluster while the section runs (WPFLEET_WORKERS).
    scale_workers: int = 4
    # Fill sites posted and not yet ACTIVE (or failed) at any time.
    scale_in_flight: int = 8
    scale_reload_samples: int = 3
    scale_reconcile_samples: int = 2
    # GET /api/sites and GET /api/sites/<name>, each this many times, one after another.
    scale_api_requests: int = 30
    # Threads asking every site for a page through Caddy (page views; the restart's probe rounds).
    scale_view_threads: int = 16
    scale_probe_threads: int = 32
    # Seconds after drop_caches before MemAvailable is read.
    scale_memory_settle_s: float = 10.0
    # After the settle, the host's CPU is read over this long with no site being built:
    # what existing sites and housekeeping take from the POST→ACTIVE samples.
    scale_idle_cpu_s: float = 30.0
    # After a fill, at most this long waiting for every new site's first cron
    # run (a one-off burst: each new site's install-time events fall due
    # within WPFLEET_CRON_INTERVAL_SECONDS) and for the panel's open jobs
    # (backups, the repository's maintenance) before the POST→ACTIVE samples.
    scale_cron_settle_s: float = 600.0
    # No more sites once MemAvailable is below this (MB): a safety net under
    # the panel's own memory refusal (WPFLEET_CAPACITY_MEMORY_HEADROOM, 1 GB,
    # plus a site's 26 MB), which is meant to stop the fill first, with a 507.
    scale_min_available_mb: int = 700
    # Filling stops once more than this share of the fill's sites failed (of 20 at least).
    scale_max_failed: float = 0.05
    # The restart: how long every site has to answer 200 again after the SIGKILL.
    scale_restart_timeout: float = 900.0
    # php-fpm's ondemand pool reaps idle children after 10 s; 15 s leaves margin.
    idle_seconds: float = 15.0
    # Seconds to wait for a batch of n sites: generous, a stuck job must not hang the bench.
    timeout_base: float = 120.0
    timeout_per_site: float = 15.0

    def batch_timeout(self, n: int) -> float:
        return self.timeout_base + self.timeout_per_site * n

    def scale_levels(self) -> tuple[int, ...]:
        """Existing sites the scale section measures at: 0, fill/4, fill/2, fill (1,000: 0, 250, 500, 1,000)."""
        fill = max(self.scale_fill, 0)
        return tuple(sorted({0, fill // 4, fill // 2, fill}))


FULL_PLAN = Plan()
QUICK_PLAN = Plan(
    quick=True,
    workers=2,
    sequential_n=3,
    concurrent_runs=((5, 2),),
    api_clients=10,
    api_requests_per_client=5,
    fill_levels=(0, 100),
    fill_sites_per_level=1,
    density_sites=3,
    backup_upload_bytes=50 * 1024 * 1024,
    serving_cold_samples=3,
    serving_warm_requests=80,
    serving_load_seconds=10,
    serving_identity_seconds=5,
    serving_purge_repetitions=3,
    serving_opcache_requests=30,
    serving_opcache_load_seconds=5,
    operations_sites=3,
    scale_fill=20,
    scale_samples=3,
    scale_idle_cpu_s=10.0,
)
