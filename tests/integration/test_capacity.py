"""On the real lab: the capacity check reads the real host (HostProbe) and refuses with 507.

Nothing is built: a refused POST writes nothing, so no worker is needed and no
container, database or route is left behind.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from django.conf import settings

from jobs.models import Job
from sites.infra.mariadb import MariaDBAdmin
from sites.models import Site
from sites.ops.capacity import GC_THRESH3, host_capacity
from tests.conftest import unique_name

pytestmark = [pytest.mark.integration]


def readings() -> dict:
    return {reading.name: reading for reading in host_capacity()}


def test_a_host_at_its_site_limit_answers_507_naming_sites(api, settings):
    settings.WPFLEET_MAX_SITES = max(1, Site.objects.count())
    while Site.objects.count() < settings.WPFLEET_MAX_SITES:
        Site.objects.create(name=unique_name(), domain="filler.invalid")
    before = (Site.objects.count(), Job.objects.count())
    response = api.post("/api/sites", {"site": unique_name()})
    assert response.status_code == 507
    assert {key: response.json()[key] for key in ("code", "resource")} == {"code": "capacity", "resource": "sites"}
    assert (Site.objects.count(), Job.objects.count()) == before


def test_an_impossible_memory_headroom_answers_507_naming_memory(api, settings):
    memory = readings()["memory"]
    assert memory.known, memory.detail  # the panel runs on the Docker host: /proc/meminfo is there
    settings.WPFLEET_CAPACITY_MEMORY_HEADROOM = 1024**5  # a pebibyte
    response = api.post("/api/sites", {"site": unique_name()})
    assert (response.status_code, response.json()["resource"]) == (507, "memory")
    assert "available" in response.json()["detail"] and not Site.objects.exists()


def test_the_real_host_reports_mariadbs_connections_memory_disk_and_its_neighbour_table(infra, db):
    before = readings()
    for name in ("memory", "disk", "db_connections"):
        assert before[name].known and before[name].ok, before[name].detail
    # The kernel's neighbour table, raised by the lab's set-up past its default's 320 sites.
    with open(GC_THRESH3) as value:
        gc_thresh3 = int(value.read())
    assert gc_thresh3 >= 16384 and f"gc_thresh3={gc_thresh3:,}" in before["addresses"].detail
    with MariaDBAdmin().cursor() as cur:
        cur.execute("SELECT @@max_connections")
        (most,) = cur.fetchone()
    assert before["db_connections"].limit == most - settings.WPFLEET_CAPACITY_DB_CONNECTIONS_FREE
    with ExitStack() as held:
        for _ in range(5):
            held.enter_context(MariaDBAdmin().cursor())
        # Five connections held here, plus the probe's own.
        assert readings()["db_connections"].used >= 6
    assert settings.WPFLEET_QUOTA_ROOT in before["disk"].detail or not settings.WPFLEET_QUOTA_ROOT
