"""A site deleted after the engine live-restored its containers: the engine may refuse its volumes
(moby#44422) until it restarts. The delete still removes the site's data; the reconciler removes
the empty volumes once the engine lets it, and never a volume that could hold anything."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from docker.errors import APIError

from sites.infra.docker_host import DockerHost
from sites.infra.errors import InfraError, VolumeHeldByEngine
from sites.models import Site
from sites.ops.cleanup import remove_emptied_volumes
from sites.provisioning.steps import Context, Infra, SiteNames, VolumeStep

pytestmark = pytest.mark.django_db

HELD = "remove {name}: volume has active mounts"


class FakeVolume:
    def __init__(self, name: str, labels: dict, options: dict | None = None, refuse: str | None = None):
        self.name = name
        self.labels = labels
        self.attrs = {"Name": name, "Labels": labels, "Options": options}
        self.refuse = refuse
        self.removed = False

    def remove(self, force: bool = False) -> None:
        if self.refuse:
            raise APIError("409 Client Error", explanation=self.refuse.format(name=self.name))
        self.removed = True


class FakeClient:
    """The parts of docker-py that removing a volume uses."""

    def __init__(self, volume: FakeVolume, users: list[str]):
        self.volume = volume
        self.volumes = SimpleNamespace(get=lambda name: volume)
        self.api = SimpleNamespace(containers=self._containers)
        self.users = users
        self.asked: list[dict] = []

    def _containers(self, all: bool, filters: dict) -> list[dict]:
        self.asked.append({"all": all, "filters": filters})
        return [{"Names": [f"/{name}"]} for name in self.users]


def engine_with(volume: FakeVolume, users: list[str]) -> DockerHost:
    host = DockerHost()
    host._client = FakeClient(volume, users)
    return host


def test_a_volume_the_engine_counts_as_mounted_by_no_container_is_reported_as_held_until_the_engine_restarts(
    settings,
):
    labels = {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.site": "shop"}
    host = engine_with(FakeVolume("wp_shop", labels, refuse=HELD), users=[])
    with pytest.raises(VolumeHeldByEngine, match="once dockerd has restarted") as caught:
        host.remove_volume("wp_shop", labels)
    assert caught.value.permanent
    assert host.client.asked == [{"all": True, "filters": {"volume": "wp_shop"}}]


def test_a_volume_a_container_still_mounts_is_an_ordinary_refusal_not_the_engines_miscount(settings):
    labels = {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.site": "shop"}
    host = engine_with(FakeVolume("wp_shop", labels, refuse=HELD), users=["someone-elses-backup"])
    with pytest.raises(InfraError, match="active mounts") as caught:
        host.remove_volume("wp_shop", labels)
    assert not isinstance(caught.value, VolumeHeldByEngine)


class FakeQuotas:
    """Quota directories as real directories under a temporary root."""

    def __init__(self, root: str, mounted: bool = True):
        self.root = root
        self.mounted = mounted
        self.removed: list[str] = []

    def path(self, site: str) -> str:
        return os.path.join(self.root, site)

    def check(self) -> None:
        if not self.mounted:
            raise InfraError("disk quota", f"{self.root} does not exist (is the quota filesystem mounted?)")

    def remove(self, site: str) -> None:
        self.removed.append(site)
        for part in ("files", "cache", "tmp"):
            path = os.path.join(self.path(site), part)
            if os.path.isdir(path):
                os.rmdir(path)


class FakeEngine:
    """This owner's volumes; those named in ``held`` are refused as VolumeHeldByEngine."""

    def __init__(self, volumes: list[FakeVolume], held: set[str] = frozenset()):  # type: ignore[assignment]
        self.volumes = {volume.name: volume for volume in volumes}
        self.held = set(held)
        self.listings = 0

    def list_owned(self, kind: str) -> list[FakeVolume]:
        assert kind == "volume"
        self.listings += 1
        return list(self.volumes.values())

    def remove_volume(self, name: str, labels: dict) -> str | None:
        if name in self.held:
            raise VolumeHeldByEngine("docker", f"remove volume {name}: the engine counts a mount of it")
        volume = self.volumes.get(name)
        if volume is not None:
            assert all(volume.labels.get(key) == value for key, value in labels.items() if key != "wpfleet.role")
            del self.volumes[name]
        return None


def infra_with(engine: FakeEngine, quotas: FakeQuotas | None) -> Infra:
    infra = Infra()
    infra.docker = engine  # type: ignore[assignment]
    infra.quotas = quotas  # type: ignore[assignment]
    return infra


def bound(site: str, part: str, quotas: FakeQuotas, owner: str, role: str = "volume") -> FakeVolume:
    name = ("wpcache_" if part == "cache" else "wp_") + site
    labels = {"wpfleet.owner": owner, "wpfleet.site": site, "wpfleet.role": role}
    return FakeVolume(name, labels, {"type": "none", "o": "bind", "device": f"{quotas.path(site)}/{part}"})


def overlaid(site: str, quotas: FakeQuotas, owner: str) -> FakeVolume:
    labels = {"wpfleet.owner": owner, "wpfleet.site": site, "wpfleet.role": "tmp"}
    base = quotas.path(site)
    layers = f"lowerdir={quotas.path('.wpfleet-templates')}/opcache-x,upperdir={base}/tmp,workdir={base}/work"
    return FakeVolume("wptmp_" + site, labels, {"type": "overlay", "device": "overlay", "o": layers})


def test_a_delete_whose_volumes_the_engine_holds_still_deletes_the_sites_data_and_says_what_stayed(tmp_path, settings):
    quotas = FakeQuotas(str(tmp_path))
    for part in ("files", "cache", "tmp"):
        os.makedirs(os.path.join(quotas.path("shop"), part))
    owner = settings.WPFLEET_OWNER
    volumes = [bound("shop", "files", quotas, owner), bound("shop", "cache", quotas, owner, "cache")]
    engine = FakeEngine(volumes, held={"wp_shop", "wpcache_shop"})
    ctx = Context("shop", "", infra=infra_with(engine, quotas))

    VolumeStep().undo(ctx)

    assert quotas.removed == ["shop"]
    assert not os.path.exists(os.path.join(quotas.path("shop"), "files"))
    assert sorted(engine.volumes) == ["wp_shop", "wpcache_shop"]
    assert len(ctx.notes) == 2
    assert all("its data is deleted with the quota directory" in note for note in ctx.notes)


def test_without_quotas_a_held_volume_fails_the_delete_since_its_data_would_stay_in_it(settings):
    names = SiteNames("shop")
    labels = {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.site": "shop"}
    engine = FakeEngine([FakeVolume(names.volume, labels)], held={names.volume})
    ctx = Context("shop", "", infra=infra_with(engine, None))
    with pytest.raises(VolumeHeldByEngine):
        VolumeStep().undo(ctx)


def test_the_reconciler_removes_only_volumes_of_deleted_sites_bound_to_a_quota_directory_that_is_gone(
    tmp_path, settings
):
    owner = settings.WPFLEET_OWNER
    quotas = FakeQuotas(str(tmp_path))
    Site.objects.create(name="alive", status=Site.Status.ACTIVE, db_password="x")
    os.makedirs(os.path.join(quotas.path("kept"), "files"))  # a deleted site whose directory is still there
    volumes = [
        bound("gone", "files", quotas, owner),
        bound("gone", "cache", quotas, owner, "cache"),
        overlaid("gone", quotas, owner),  # its PHP's /tmp: an overlay whose upper layer was its tmp/
        bound("alive", "files", quotas, owner),  # a row: a site being built has its directory made first
        bound("kept", "files", quotas, owner),
        FakeVolume("wp_plain", {"wpfleet.owner": owner, "wpfleet.site": "plain"}),  # data in the volume itself
        FakeVolume(  # bound somewhere that is not the site's quota directory
            "wp_odd",
            {"wpfleet.owner": owner, "wpfleet.site": "odd"},
            {"type": "none", "o": "bind", "device": f"{quotas.path('other')}/files"},
        ),
    ]
    engine = FakeEngine(volumes)

    assert remove_emptied_volumes(infra_with(engine, quotas)) == ["wp_gone", "wpcache_gone", "wptmp_gone"]
    assert sorted(engine.volumes) == ["wp_alive", "wp_kept", "wp_odd", "wp_plain"]


def test_a_volume_the_engine_still_holds_is_left_for_the_next_pass(tmp_path, settings):
    quotas = FakeQuotas(str(tmp_path))
    engine = FakeEngine([bound("gone", "files", quotas, settings.WPFLEET_OWNER)], held={"wp_gone"})
    infra = infra_with(engine, quotas)

    assert remove_emptied_volumes(infra) == []
    engine.held.clear()  # the engine restarted
    assert remove_emptied_volumes(infra) == ["wp_gone"]


def test_nothing_is_removed_while_the_quota_filesystem_is_not_mounted(tmp_path, settings):
    quotas = FakeQuotas(str(tmp_path / "not-mounted"), mounted=False)
    engine = FakeEngine([bound("gone", "files", quotas, settings.WPFLEET_OWNER)])

    assert remove_emptied_volumes(infra_with(engine, quotas)) == []
    assert list(engine.volumes) == ["wp_gone"]


def test_a_pass_over_volumes_already_listed_asks_the_engine_for_nothing_when_none_qualifies(tmp_path, settings):
    quotas = FakeQuotas(str(tmp_path))
    os.makedirs(os.path.join(quotas.path("shop"), "files"))
    volumes = [bound("shop", "files", quotas, settings.WPFLEET_OWNER)]
    engine = FakeEngine(volumes)

    assert remove_emptied_volumes(infra_with(engine, quotas), volumes) == []
    assert engine.listings == 0
