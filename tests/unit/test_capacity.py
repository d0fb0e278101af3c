"""Capacity checks before accepting a site (issue 14), on a fake host: no lab.

A new site that would exhaust one of the host's resources is refused with 507
naming it, in the API and the admin alike, and nothing is written.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django_q.models import OrmQ

from jobs.models import Job
from sites.admin import sites as site_admin
from sites.infra.errors import InfraError
from sites.models import Backup, Site
from sites.ops import capacity
from sites.ops.capacity import CapacityExhausted, HostProbe, check_capacity, host_capacity
from sites.services import create_site

pytestmark = pytest.mark.django_db(transaction=True)

MiB, GiB = 1024**2, 1024**3
ADD_SITE = reverse("admin:sites_site_add")
HOME = reverse("admin:index")


class FakeHost:
    """A host with plenty of room until a test takes some away."""

    def __init__(self) -> None:
        self.memory = (64 * GiB, 32 * GiB)  # total, available
        self.disk = (500 * GiB, 400 * GiB)  # total, free
        self.db: tuple[int, int] | Exception = (10, 1000)  # Threads_connected, max_connections
        self.neighbours: int | Exception = 16384  # net.ipv4.neigh.default.gc_thresh3
        self.disk_paths: list[str] = []

    def mem_total(self) -> int:
        return self.memory[0]

    def mem_available(self) -> int:
        return self.memory[1]

    def disk_total(self, path: str) -> int:
        self.disk_paths.append(path)
        return self.disk[0]

    def disk_free(self, path: str) -> int:
        return self.disk[1]

    def db_connections(self) -> tuple[int, int]:
        if isinstance(self.db, Exception):
            raise self.db
        return self.db

    def neighbour_limit(self) -> int:
        if isinstance(self.neighbours, Exception):
            raise self.neighbours
        return self.neighbours


@pytest.fixture(autouse=True)
def host(monkeypatch, settings) -> FakeHost:
    """Every check in these tests reads this fake host (the services build their probe from HostProbe)."""
    fake = FakeHost()
    monkeypatch.setattr(capacity, "HostProbe", lambda: fake)
    settings.WPFLEET_MAX_SITES = 1000
    settings.WPFLEET_CAPACITY_SITE_MEMORY = 32 * MiB
    settings.WPFLEET_CAPACITY_MEMORY_HEADROOM = 1 * GiB
    settings.WPFLEET_CAPACITY_DISK_HEADROOM = 5 * GiB
    settings.WPFLEET_CAPACITY_DB_CONNECTIONS_FREE = 20
    return fake


def nothing_written() -> bool:
    return not Site.objects.exists() and not Job.objects.exists() and not OrmQ.objects.exists()


def small_backend_shards(settings, room: int) -> None:
    """Backend ports for ``room`` sites: two shards (wp_backend and a pool of one /22) of 8 hold 16, the rest reserved."""
    settings.WPFLEET_BACKEND_SHARD_POOL = ipaddress.IPv4Network("10.202.0.0/22")
    settings.WPFLEET_BACKEND_SHARD_SIZE = 8
    settings.WPFLEET_CAPACITY_ADDRESS_RESERVE = 16 - room


# --- the API: room accepts, an exhausted resource refuses with 507 and writes nothing -----


def test_a_host_with_room_accepts_the_site_and_queues_its_job(api):
    response = api.post("/api/sites", {"site": "roomy"})
    assert response.status_code == 202
    assert Site.objects.filter(name="roomy").exists() and OrmQ.objects.count() == 1


def exhaust(resource: str, host: FakeHost, settings) -> None:
    """Leave no room for one more site in ``resource``, one unit short of the limit where there is a boundary."""
    if resource == "sites":
        settings.WPFLEET_MAX_SITES = 1
        create_site("first")
    elif resource == "memory":
        host.memory = (64 * GiB, 1 * GiB + 32 * MiB - 1)
    elif resource == "disk":
        host.disk = (500 * GiB, 5 * GiB - 1)
    elif resource == "addresses":
        small_backend_shards(settings, room=1)
        create_site("first")
    elif resource == "db_connections":
        host.db = (981, 1000)


@pytest.mark.parametrize("resource", capacity.RESOURCES)
def test_a_site_that_would_exhaust_a_resource_is_507_naming_it_and_writes_nothing(api, host, settings, resource):
    exhaust(resource, host, settings)
    before = (Site.objects.count(), Job.objects.count(), OrmQ.objects.count())

    response = api.post("/api/sites", {"site": "onemore"})

    assert response.status_code == 507
    body = response.json()
    assert body["code"] == "capacity" and body["resource"] == resource
    assert f"({resource})" in body["detail"]
    assert not Site.objects.filter(name="onemore").exists()
    assert (Site.objects.count(), Job.objects.count(), OrmQ.objects.count()) == before


def test_memory_refuses_once_every_sites_footprint_would_pass_the_hosts_memory_whatever_memavailable_says(
    api, host, settings
):
    # MemAvailable counts the page cache, the sites' hot files included, as available.
    host.memory = (2 * GiB, int(1.9 * GiB))
    settings.WPFLEET_CAPACITY_SITE_MEMORY = 256 * MiB  # 2 GiB less 1 GiB of headroom: four sites
    for name in ("one", "two", "three"):
        create_site(name)
    assert api.post("/api/sites", {"site": "four"}).status_code == 202, "the fourth fits exactly"

    response = api.post("/api/sites", {"site": "five"})

    assert (response.status_code, response.json()["resource"]) == (507, "memory")
    assert (
        "5 sites at about 256.0 MiB each (WPFLEET_CAPACITY_SITE_MEMORY) take 1.2 GiB of 1.0 GiB"
        in (response.json()["detail"])
    )
    assert not Site.objects.filter(name="five").exists()


@pytest.mark.parametrize(
    "resource, at_the_limit",
    [
        ("memory", lambda host, settings: setattr(host, "memory", (64 * GiB, 1 * GiB + 32 * MiB))),
        ("disk", lambda host, settings: setattr(host, "disk", (500 * GiB, 5 * GiB))),
        ("db_connections", lambda host, settings: setattr(host, "db", (980, 1000))),
        ("sites", lambda host, settings: setattr(settings, "WPFLEET_MAX_SITES", 2)),
    ],
)
def test_a_site_that_leaves_exactly_the_headroom_is_accepted(api, host, settings, resource, at_the_limit):
    at_the_limit(host, settings)
    create_site("first")
    assert api.post("/api/sites", {"site": "last"}).status_code == 202


def test_bad_input_on_a_full_host_gets_its_own_error_first(api, settings):
    settings.WPFLEET_MAX_SITES = 1
    create_site("taken")
    assert api.post("/api/sites", {"site": "Not-Valid"}).status_code == 400
    assert api.post("/api/sites", {"site": "taken"}).status_code == 409
    assert api.post("/api/sites", {"site": "fresh"}).status_code == 507
    assert Site.objects.count() == 1 and Job.objects.count() == 1


def test_a_site_being_deleted_still_counts_until_its_row_goes(api, settings):
    settings.WPFLEET_MAX_SITES = 1
    create_site("leaving")
    Site.objects.filter(name="leaving").update(status=Site.Status.DEPROVISIONING)
    assert api.post("/api/sites", {"site": "arriving"}).json()["resource"] == "sites"
    Site.objects.filter(name="leaving").delete()
    assert api.post("/api/sites", {"site": "arriving"}).status_code == 202


def test_no_site_limit_leaves_only_the_resources(settings):
    settings.WPFLEET_MAX_SITES = 0
    sites = next(reading for reading in host_capacity() if reading.name == "sites")
    assert sites.ok and sites.limit is None and sites.limit_text == "no limit"
    check_capacity()


def test_a_clone_is_a_new_site_and_is_refused_the_same_way(api, settings):
    settings.WPFLEET_BACKUP_REPOSITORY = "/nonexistent/restic"
    settings.WPFLEET_BACKUP_PASSWORD = "unused"
    alpha = Site.objects.create(name="alpha", domain="alpha.wpfleet.test", status=Site.Status.ACTIVE)
    Backup.objects.create(
        site=alpha, site_name="alpha", kind=Backup.Kind.MANUAL, status=Backup.Status.DONE, created_at=timezone.now()
    )
    settings.WPFLEET_MAX_SITES = 1
    response = api.post("/api/sites/alpha/clone", {"site": "gamma"}, format="json")
    assert (response.status_code, response.json()["code"], response.json()["resource"]) == (507, "capacity", "sites")
    assert list(Site.objects.values_list("name", flat=True)) == ["alpha"] and not Job.objects.exists()


# --- what cannot be read refuses nothing ----------------------------------------------------


def test_a_mariadb_that_cannot_be_asked_refuses_nothing_and_reads_unknown(api, host):
    host.db = InfraError("mariadb", "(2003) Can't connect to MySQL server")
    assert api.post("/api/sites", {"site": "dbdown"}).status_code == 202
    db = next(reading for reading in host_capacity() if reading.name == "db_connections")
    assert db.ok and not db.known and db.used_text == "unknown" and "Can't connect" in db.detail


def test_the_real_probe_reads_meminfo_and_the_filesystem(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:          100 kB\nMemAvailable:    8192000 kB\n")
    gc_thresh3 = tmp_path / "gc_thresh3"
    gc_thresh3.write_text("16384\n")
    probe = HostProbe(meminfo=str(meminfo), gc_thresh3=str(gc_thresh3))
    assert (probe.mem_total(), probe.mem_available()) == (16384000 * 1024, 8192000 * 1024)
    assert probe.neighbour_limit() == 16384
    assert 0 < probe.disk_free(str(tmp_path)) <= probe.disk_total(str(tmp_path))


def test_an_unreadable_disk_path_or_meminfo_is_unknown_not_exhausted(tmp_path, monkeypatch, settings):
    settings.WPFLEET_CAPACITY_DISK_PATH = str(tmp_path / "not-mounted")
    real = HostProbe(meminfo=str(tmp_path / "no-meminfo"))
    monkeypatch.setattr(real, "db_connections", lambda: (1, 1000))
    readings = {reading.name: reading for reading in host_capacity(real)}
    assert not readings["disk"].known and "not-mounted" in readings["disk"].detail
    assert not readings["memory"].known
    check_capacity(real)


def test_the_disk_read_is_the_capacity_path_else_the_quota_root_else_dockers(host, settings):
    for path, quota_root, read in [
        ("/srv/sites", "/var/lib/wpfleet/sites", "/srv/sites"),
        ("", "/var/lib/wpfleet/sites", "/var/lib/wpfleet/sites"),
        ("", "", "/var/lib/docker"),
    ]:
        settings.WPFLEET_CAPACITY_DISK_PATH, settings.WPFLEET_QUOTA_ROOT = path, quota_root
        host.disk_paths.clear()
        host_capacity()
        assert host.disk_paths == [read]


def test_address_room_is_the_shard_ports_minus_the_reserve(settings):
    # The defaults: 65 shards (wp_backend and the 64 /22s of a /16) of 500
    # sites, one port each; 16 ports kept free.
    settings.WPFLEET_BACKEND_SHARD_POOL = ipaddress.IPv4Network("10.202.0.0/16")
    settings.WPFLEET_BACKEND_SHARD_SIZE = 500
    settings.WPFLEET_CAPACITY_ADDRESS_RESERVE = 16
    assert capacity.address_room() == (65 * 500 - 16, 65 * 500)
    # Two shards (wp_backend and a pool of one /22) of 100 sites.
    settings.WPFLEET_BACKEND_SHARD_POOL = ipaddress.IPv4Network("10.202.0.0/22")
    settings.WPFLEET_BACKEND_SHARD_SIZE = 100
    assert capacity.address_room() == (2 * 100 - 16, 200)
    # A reserve larger than the shards leaves no room, not less than none.
    settings.WPFLEET_CAPACITY_ADDRESS_RESERVE = 201
    assert capacity.address_room() == (0, 200)


def test_the_addresses_reading_counts_sites_against_the_shard_ports_and_names_the_reserve(settings):
    small_backend_shards(settings, room=12)
    create_site("one")
    addresses = next(reading for reading in host_capacity() if reading.name == "addresses")
    assert (addresses.used, addresses.limit, addresses.unit, addresses.ok) == (1, 12, "sites", True)
    assert addresses.detail == (
        "1 sites hold a port on a backend shard each; the shards have room for 12 (16 ports: 2 backend shards "
        "of 8 sites, WPFLEET_BACKEND_SHARD_SIZE; 4 kept free: WPFLEET_CAPACITY_ADDRESS_RESERVE); "
        "the kernel's neighbour table has room for 5,440 (net.ipv4.neigh.default.gc_thresh3=16,384 entries, "
        "3 a site, 64 kept for the host)"
    )


def test_a_kernel_neighbour_table_at_its_default_limits_the_addresses_to_about_320_sites(host, settings):
    # The default shards have ports for 32,484 sites; 1,024 entries (the
    # kernel's default), 64 kept, 3 a site: 320 sites.
    settings.WPFLEET_BACKEND_SHARD_POOL = ipaddress.IPv4Network("10.202.0.0/16")
    settings.WPFLEET_BACKEND_SHARD_SIZE = 500
    settings.WPFLEET_CAPACITY_ADDRESS_RESERVE = 16
    host.neighbours = 1024
    addresses = next(reading for reading in host_capacity() if reading.name == "addresses")
    assert (addresses.limit, addresses.ok) == (320, True)
    assert "gc_thresh3=1,024" in addresses.detail


def test_a_full_neighbour_table_refuses_the_site_naming_addresses_and_the_sysctl(api, host):
    host.neighbours = 64 + 3  # room for one site
    create_site("first")
    response = api.post("/api/sites", {"site": "second"})
    assert (response.status_code, response.json()["resource"]) == (507, "addresses")
    assert "net.ipv4.neigh.default.gc_thresh3=67" in response.json()["detail"]
    assert list(Site.objects.values_list("name", flat=True)) == ["first"]


def test_an_unreadable_neighbour_table_leaves_the_ports_as_the_room_and_says_so(host, settings):
    small_backend_shards(settings, room=12)
    host.neighbours = OSError("[Errno 2] No such file or directory: '/proc/sys/net/ipv4/neigh/default/gc_thresh3'")
    addresses = next(reading for reading in host_capacity() if reading.name == "addresses")
    assert (addresses.limit, addresses.ok) == (12, True)
    assert addresses.detail.endswith(
        "the kernel's neighbour table: unknown ([Errno 2] No such file or directory: "
        "'/proc/sys/net/ipv4/neigh/default/gc_thresh3')"
    )


def test_a_refusal_is_raised_for_the_first_exhausted_resource_only(host, settings):
    settings.WPFLEET_MAX_SITES = 0
    host.disk = (500 * GiB, 0)
    host.db = (1000, 1000)
    with pytest.raises(CapacityExhausted) as refused:
        check_capacity()
    assert refused.value.resource == "disk" and "WPFLEET_CAPACITY_DISK_HEADROOM" in str(refused.value)


# --- the admin: the same refusal, and the host's capacity on its home -----------------------


def test_the_admin_add_form_shows_the_refusal_naming_the_resource_and_writes_nothing(admin_client, api, host):
    host.memory = (64 * GiB, 512 * MiB)
    api_message = api.post("/api/sites", {"site": "blog"}).json()["detail"]
    response = admin_client.post(ADD_SITE, {"name": "blog", "_save": "Save"})
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [api_message]
    assert "(memory)" in api_message and escape(api_message) in response.content.decode()
    assert nothing_written() and not LogEntry.objects.exists()


def test_the_admin_add_that_loses_the_last_room_after_its_form_check_says_so(admin_client, monkeypatch):
    def full_meanwhile(name, **wordpress):
        raise CapacityExhausted("addresses", "0 ports left")

    monkeypatch.setattr(site_admin, "create_site", full_meanwhile)
    response = admin_client.post(ADD_SITE, {"name": "racy", "_save": "Save"}, follow=True)
    messages = [str(message) for message in response.context["messages"]]
    assert messages == ["The host has no room for another site (addresses): 0 ports left"]
    assert nothing_written() and not LogEntry.objects.exists()


def test_the_admin_home_shows_each_resource_used_against_its_limit(admin_client, host, settings):
    settings.WPFLEET_MAX_SITES = 3
    small_backend_shards(settings, room=12)
    create_site("one")
    host.memory = (16 * GiB, 10 * GiB)
    host.disk = (100 * GiB, 4 * GiB)
    host.db = InfraError("mariadb", "(2003) Can't connect")

    page = admin_client.get(HOME).content.decode()

    assert 'id="wpfleet-capacity"' in page
    rows = {name: section(page, f'id="wpfleet-capacity-{name}"') for name in capacity.RESOURCES}
    assert amounts(rows["sites"]) == ["1", "3 sites"] and "room" in rows["sites"]
    # Memory and disk: used, against the total less the headroom kept free.
    assert amounts(rows["memory"]) == ["6.0 GiB", "15.0 GiB"] and "room" in rows["memory"]
    assert amounts(rows["disk"]) == ["96.0 GiB", "95.0 GiB"] and "exhausted" in rows["disk"]
    assert amounts(rows["addresses"]) == ["1", "12 sites"]
    assert amounts(rows["db_connections"]) == ["unknown", "unknown"] and "Can&#x27;t connect" in rows["db_connections"]
    assert "exhausted" not in rows["db_connections"]
    assert reverse("admin:sites_site_changelist") in page, "the apps are still listed"


def section(page: str, start: str) -> str:
    """The table row that begins at ``start``."""
    begin = page.index(start)
    return page[begin : page.index("</tr>", begin)]


def amounts(row: str) -> list[str]:
    """The used and limit cells of a capacity row."""
    return re.findall(r'<td class="wpf-amount">([^<]*)</td>', row)
