"""The parts of running many sites that need no engine: shard bookkeeping, the deep-check rota, one housekeeping pass at a time."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess

import pytest
from django.core.cache import cache

from jobs import housekeeping as hk
from jobs import registry
from sites.infra.errors import InfraError, InvalidConfiguration
from sites.models import Site
from sites.ops.reconcile import deep_sample
from sites.provisioning import shards

pytestmark = pytest.mark.django_db


def network(name: str, subnet: str, labels: dict | None = None) -> dict:
    return {"Name": name, "Labels": labels or {}, "IPAM": {"Config": [{"Subnet": subnet}]}}


def test_the_owners_shards_are_the_default_network_and_its_labelled_networks_in_order(settings):
    listing = [
        network(shards.shard_name(2), "10.202.4.0/22", shards.shard_labels(2)),
        network("someone-elses", "10.202.8.0/22", {"wpfleet.role": shards.SHARD_ROLE, "wpfleet.owner": "other"}),
        network(shards.shard_name(1), "10.202.0.0/22", shards.shard_labels(1)),
    ]
    assert shards.owned_shards(listing) == {
        0: settings.WPFLEET_BACKEND_NETWORK,
        1: shards.shard_name(1),
        2: shards.shard_name(2),
    }
    names = (settings.WPFLEET_BACKEND_NETWORK, shards.shard_name(7), f"{settings.WPFLEET_BACKEND_NETWORK}-x-1")
    assert [shards.shard_index(name) for name in names] == [0, 7, None]


def test_a_new_shard_gets_the_first_slash_22_of_the_pool_that_no_network_overlaps(settings):
    settings.WPFLEET_BACKEND_SHARD_POOL = ipaddress.IPv4Network("10.202.0.0/20")
    listing = [network("a", "10.202.0.0/22"), network("b", "10.202.5.0/24")]
    assert shards._free_subnet(listing) == "10.202.8.0/22"
    full = listing + [network("c", "10.202.8.0/21")]
    with pytest.raises(InvalidConfiguration, match="no free /22"):
        shards._free_subnet(full)


def test_the_shard_slots_count_the_default_network_and_every_slash_22_of_the_pool(settings):
    settings.WPFLEET_BACKEND_SHARD_SIZE = 500
    settings.WPFLEET_BACKEND_SHARD_POOL = ipaddress.IPv4Network("10.202.0.0/16")
    assert shards.shard_slots() == (1 + 64) * 500


class FakeShardEngine:
    """The Docker adapter's network calls that retiring shards makes, over networks held here."""

    def __init__(self, caddy: str):
        self.caddy = caddy
        self.members: dict[str, list[str]] = {}
        self.refuse: set[str] = set()

    def add(self, index: int, *members: str) -> str:
        name = shards.shard_name(index)
        self.members[name] = list(members)
        return name

    def network_summaries(self) -> list[dict]:
        return [
            network(name, "10.202.0.0/22", shards.shard_labels(shards.shard_index(name) or 0)) for name in self.members
        ]

    def network(self, name: str):
        if name not in self.members:
            return None
        containers = {f"id-{member}": {"Name": member} for member in self.members[name]}
        return type("Network", (), {"attrs": {"Containers": containers}})()

    def disconnect(self, name: str, container: str) -> None:
        self.members[name].remove(container)

    def remove_network(self, name: str, labels: dict) -> None:
        if name in self.refuse:
            raise InfraError("docker", f"remove network {name}: has active endpoints")
        del self.members[name]

    def container(self, name: str):
        attached: dict[str, dict] = {net: {} for net, members in self.members.items() if name in members}
        return type("Container", (), {"name": name, "attrs": {"NetworkSettings": {"Networks": attached}}})()

    def connect(self, name: str, container) -> None:
        self.members[name].append(container.name)


@pytest.fixture
def engine():
    fake = FakeShardEngine("caddy")
    caddy = type("Caddy", (), {"container_name": "caddy"})()
    return fake, type("Infra", (), {"docker": fake, "caddy": caddy})()


def test_only_shards_with_nothing_but_caddy_on_them_and_no_row_naming_them_are_retired(engine):
    fake, infra = engine
    empty = fake.add(1, "caddy")
    in_use = fake.add(2, "caddy", "nginx_a")
    named = fake.add(3, "caddy")
    Site.objects.create(name="named", db_password="x", backend_network=named)

    assert shards.retire_empty_shards(infra, dry_run=True) == [empty]
    assert empty in fake.members
    assert shards.retire_empty_shards(infra) == [empty]
    assert set(fake.members) == {in_use, named}
    assert shards.retire_empty_shards(infra, among={named}) == []


def test_a_shard_the_engine_refuses_to_remove_gets_caddy_back_and_the_error_is_raised(engine):
    fake, infra = engine
    busy = fake.add(1, "caddy")
    fake.refuse.add(busy)  # a site attached between the look and the removal

    with pytest.raises(InfraError, match="active endpoints"):
        shards.retire_empty_shards(infra)

    assert fake.members[busy] == ["caddy"]


def test_every_site_has_its_nginx_read_within_a_full_turn_of_passes():
    names = [f"site{i}" for i in range(100)]
    seen: set[str] = set()
    sizes = []
    for minute in range(5):
        sample = deep_sample(names, per_pass=20, now=minute * 60.0)
        sizes.append(len(sample))
        seen |= sample
    assert seen == set(names)
    assert sum(sizes) == 100  # each site once per turn of 5 passes
    assert deep_sample(names, per_pass=0) == frozenset()


def test_a_housekeeping_pass_is_skipped_while_another_one_runs(monkeypatch):
    ran: list[int] = []

    def probe() -> str:
        ran.append(1)
        return "ran"

    monkeypatch.setattr(registry, "periodic", lambda: {"probe": probe})
    cache.set(hk.LOCK_KEY, f"{socket.gethostname()} {os.getpid()} other-pass", 600)
    try:
        report = hk.housekeeping()
    finally:
        cache.delete(hk.LOCK_KEY)
    assert report["periodic"] == "skipped: another pass is running" and ran == []
    assert hk.housekeeping()["probe"] == "ran" and ran == [1]
    assert cache.get(hk.LOCK_KEY) is None  # released at the end of the pass


def test_a_lock_left_by_a_killed_worker_of_this_machine_is_taken_over(monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    monkeypatch.setattr(registry, "periodic", lambda: {"probe": lambda: "ran"})
    cache.set(hk.LOCK_KEY, f"{socket.gethostname()} {dead.pid} killed-pass", 600)
    assert hk.housekeeping()["probe"] == "ran"
    # Another machine's lock is never judged from here: it lapses by itself.
    cache.set(hk.LOCK_KEY, f"another-host {dead.pid} its-pass", 600)
    try:
        assert hk.housekeeping()["periodic"].startswith("skipped")
    finally:
        cache.delete(hk.LOCK_KEY)
