"""A host with many sites: backend shards, and a reconciler pass whose Docker calls do not grow per site."""

from __future__ import annotations

import ipaddress
from collections import Counter
from urllib.parse import urlsplit

import pytest

from sites.models import Site
from sites.ops.cleanup import cleanup
from sites.ops.reconcile import reconcile_all
from sites.provisioning.shards import SHARD_ROLE, ensure_shard, retire_empty_shards, shard_index
from tests.integration.conftest import fetch

pytestmark = pytest.mark.integration


def serves(site: Site) -> bool:
    answer = fetch(site.name, "/", timeout=10)
    return answer.status_code == 200 and "WordPress" in answer.text


def caddy_networks(infra) -> set[str]:
    caddy = infra.docker.container(infra.caddy.container_name)
    return set(caddy.attrs["NetworkSettings"]["Networks"])


def test_sites_past_a_full_shard_go_to_a_new_shard_that_caddy_joins(make_site, infra, settings):
    # One site per shard: every site after the first needs a shard with room, made when none has.
    settings.WPFLEET_BACKEND_SHARD_SIZE = 1
    sites = [make_site(), make_site()]
    shards = [Site.objects.get(pk=site.pk).backend_network for site in sites]

    assert shards[0] != shards[1]
    for site, shard in zip(sites, shards, strict=True):
        assert site.status == Site.Status.ACTIVE and serves(site)
        nginx = infra.docker.container(site.names.nginx)
        assert set(nginx.attrs["NetworkSettings"]["Networks"]) == {shard}
        # Caddy is on every shard it proxies to.
        assert shard in caddy_networks(infra)
    made = [shard for shard in shards if shard_index(shard)]
    assert made, "no new shard was made"
    for shard in made:
        network = infra.docker.network(shard)
        assert network.attrs["Labels"]["wpfleet.role"] == SHARD_ROLE
        assert network.attrs["Labels"]["wpfleet.owner"] == settings.WPFLEET_OWNER
        subnet = ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        assert subnet.subnet_of(settings.WPFLEET_BACKEND_SHARD_POOL)
        # One port per site and Caddy's: the shard holds what its size says.
        assert len(infra.docker.client.api.inspect_network(shard)["Containers"]) <= 1 + 1


def test_caddy_taken_off_a_shard_is_attached_again_by_the_next_pass(make_site, infra, settings):
    settings.WPFLEET_BACKEND_SHARD_SIZE = 1
    site = make_site()
    shard = Site.objects.get(pk=site.pk).backend_network
    if shard_index(shard) == 0:
        site = make_site()  # the first took the default network's last place
        shard = Site.objects.get(pk=site.pk).backend_network
    infra.docker.client.networks.get(shard).disconnect(infra.caddy.container_name)
    assert shard not in caddy_networks(infra)

    repaired = reconcile_all(infra)

    assert f"container {infra.caddy.container_name} attached to {shard}" in repaired["(caddy)"]
    assert shard in caddy_networks(infra)
    assert serves(site)


def test_the_cleanup_removes_an_empty_shard_and_keeps_one_a_site_is_recorded_on_until_it_goes(make_site, infra):
    empty, recorded = ensure_shard(infra, 40), ensure_shard(infra, 41)
    site = make_site(run=False)
    Site.objects.filter(pk=site.pk).update(backend_network=recorded)
    assert {empty, recorded} <= caddy_networks(infra)

    assert f"would remove empty backend shard {empty}" in cleanup(dry_run=True).actions
    assert infra.docker.network(empty) is not None

    report = cleanup()

    assert f"remove empty backend shard {empty}" in report.actions and report.errors == []
    assert infra.docker.network(empty) is None and empty not in caddy_networks(infra)
    assert infra.docker.network(recorded) is not None and recorded in caddy_networks(infra)

    Site.objects.filter(pk=site.pk).update(backend_network="")
    assert recorded in retire_empty_shards(infra)
    assert infra.docker.network(recorded) is None and recorded not in caddy_networks(infra)


class EngineCalls:
    """Every request the panel's Docker client sends, by method and path (the real client, counted)."""

    def __init__(self, infra, monkeypatch):
        self.calls: list[tuple[str, str]] = []
        api = infra.docker.client.api
        send = api.send

        def counted(request, **kwargs):
            self.calls.append((request.method, urlsplit(request.url).path.split("/", 2)[-1]))
            return send(request, **kwargs)

        monkeypatch.setattr(api, "send", counted)

    def by_kind(self) -> Counter:
        kinds: Counter = Counter()
        for method, path in self.calls:
            if path.startswith("containers/json"):
                kinds["list containers"] += 1
            elif path.startswith("volumes"):
                kinds["list volumes"] += 1
            elif path.startswith("networks"):
                kinds["networks"] += 1
            elif path.startswith("containers/") and path.endswith("/json"):
                kinds["inspect container"] += 1
            elif path.endswith("/archive"):
                kinds["read a file"] += 1
            elif path.endswith("/exec"):
                kinds["exec"] += 1
            else:
                kinds[f"{method} {path}"] += 1
        return kinds


def test_a_pass_over_sites_in_order_lists_each_kind_once_and_looks_inside_no_container(
    make_site, infra, settings, monkeypatch
):
    settings.WPFLEET_RECONCILE_DEEP_CHECKS = 0
    sites = [make_site(), make_site(), make_site()]
    reconcile_all(infra)  # (a first pass records what the sites made before it did not)
    containers = [infra.docker.container(n) for site in sites for n in (site.names.php, site.names.nginx)]
    refs = {c.name for c in containers} | {c.id for c in containers}
    caddy = infra.docker.container(infra.caddy.container_name)
    engine = EngineCalls(infra, monkeypatch)

    assert reconcile_all(infra) == {}

    kinds = engine.by_kind()
    assert kinds["list containers"] == 1 and kinds["list volumes"] == 1 and kinds["networks"] == 1
    # Nothing inspected, read or run in any site's container: the calls left are
    # Caddy's (is it running and on every shard; its routes and suspensions, an exec each).
    assert not [call for call in engine.calls if any(ref in call[1] for ref in refs)]
    assert kinds["exec"] == 2 and all(caddy.id in path for method, path in engine.calls if path.endswith("/exec"))
    assert all(Site.objects.get(pk=site.pk).checked_at is not None for site in sites)


def test_a_pass_repairs_drift_found_in_the_listing_and_touches_only_the_drifted_sites(
    make_site, infra, settings, monkeypatch
):
    settings.WPFLEET_RECONCILE_DEEP_CHECKS = 0
    stopped, unplugged, untouched = make_site(), make_site(), make_site()
    reconcile_all(infra)
    infra.docker.stop(infra.docker.container(stopped.names.php))
    infra.docker.stop(infra.docker.container(stopped.names.nginx))
    shard = Site.objects.get(pk=unplugged.pk).backend_network
    infra.docker.client.networks.get(shard).disconnect(unplugged.names.nginx)
    engine = EngineCalls(infra, monkeypatch)

    repaired = reconcile_all(infra)

    assert set(repaired) == {stopped.name, unplugged.name}
    assert f"PHP-FPM container {stopped.names.php} exited: started" in repaired[stopped.name]
    assert any("not reachable as" in line for line in repaired[unplugged.name])
    assert serves(stopped) and serves(unplugged) and serves(untouched)
    assert not any(untouched.name in path for _, path in engine.calls)
    assert engine.by_kind()["list containers"] == 1
