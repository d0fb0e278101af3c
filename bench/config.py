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

SECTIONS = ("sequential", "concurrent", "api", "fill", "density")


def bench_env() -> dict[str, str]:
    """Variables set for the bench process and every child it starts."""
    return {
        "DATABASE_URL": f"sqlite:///{DB_FILE}",
        "WPFLEET_OWNER": OWNER,
        "DJANGO_SETTINGS_MODULE": "hosting.settings",
    }


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
    # php-fpm's ondemand pool reaps idle children after 10 s; 15 s leaves margin.
    idle_seconds: float = 15.0
    # Seconds to wait for a batch of n sites: generous, a stuck job must not hang the bench.
    timeout_base: float = 120.0
    timeout_per_site: float = 15.0

    def batch_timeout(self, n: int) -> float:
        return self.timeout_base + self.timeout_per_site * n


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
)
