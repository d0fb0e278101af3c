"""The disk quota adapter (sites.infra.quota) against the lab's quota filesystem and the real PHP image.

Each test makes throwaway sites' directories with ``DiskQuotas.ensure``, binds
them into Docker ``local`` volumes with ``driver_opts`` as the provisioning
does, and writes from containers of the lab's WordPress PHP image, as
www-data and as root with the capabilities a site's PHP container has. No
site of the panel is made: the volumes and containers carry the label
``wpfleet.test=disk-quota``, never ``wpfleet.owner``, and everything is
removed by the fixture's finalizer.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import docker
import pytest
from django.conf import settings
from docker.errors import APIError
from docker.types import Mount

from sites.infra.errors import ForeignResource, InfraError
from sites.infra.quota import RECORDS_DIR, DiskQuotas, QuotaBelowUsage
from tests.conftest import unique_name

pytestmark = pytest.mark.integration

MiB = 1 << 20
LABELS = {"wpfleet.test": "disk-quota"}
# what sites.provisioning.steps gives a site's PHP container
PHP_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"]
QUOTA_EXCEEDED = ("Disk quota exceeded", "No space left on device")
# BTRFS_IOC_SUBVOL_CREATE: what any process may do in a directory it can write
PERL_SUBVOLUME = (
    'open(my $d, "<", "/var/www/html") or die "open: $!"; my $a = pack("q a4088", 0, "nested");'
    ' ioctl($d, 0x5000940e, $a) or die "ioctl: $!"; print "created\\n";'
)


def quota_root() -> str:
    return (
        getattr(settings, "WPFLEET_QUOTA_ROOT", "") or os.environ.get("WPFLEET_QUOTA_ROOT") or "/var/lib/wpfleet/sites"
    )


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    return docker.from_env(version="auto", timeout=120)


@pytest.fixture
def quotas() -> DiskQuotas:
    root = quota_root()
    # Fail loudly, never skip: lab/up.sh makes and mounts it.
    assert os.path.ismount(root), f"{root} is not mounted (run lab/up.sh)"
    return DiskQuotas(root)


class Lab:
    """Sites' quota directories bound into Docker volumes, and containers writing into them."""

    def __init__(self, client: docker.DockerClient, quotas: DiskQuotas) -> None:
        self.client = client
        self.quotas = quotas
        self.sites: list[str] = []
        self.volumes: list[str] = []
        self.containers: list[str] = []

    def site(self, limit: int) -> tuple[str, str]:
        """A new site's directory with ``limit``, and the Docker volume binding it: (site, volume)."""
        name = unique_name("q")
        self.sites.append(name)
        path = self.quotas.ensure(name, limit)
        assert path == self.quotas.path(name) and os.path.isdir(path)
        volume = f"wp_{name}"
        self.client.volumes.create(
            name=volume, driver="local", driver_opts=self.quotas.driver_opts(name), labels=LABELS
        )
        self.volumes.append(volume)
        return name, volume

    def run(self, volume: str, script: str, user: str = "33:33", entrypoint: str = "sh") -> tuple[int, str]:
        """Run ``script`` (sh -c, or perl -e) in the PHP image with the volume at /var/www/html."""
        container = self.client.containers.create(
            settings.WPFLEET_PHP_IMAGE,
            entrypoint=[entrypoint, "-c" if entrypoint == "sh" else "-e"],
            command=[script],
            user=user,
            mounts=[Mount(target="/var/www/html", source=volume, type="volume")],
            labels=LABELS,
            network_disabled=True,
            cap_drop=["ALL"],
            cap_add=PHP_CAPS,
            security_opt=["no-new-privileges:true"],
        )
        self.containers.append(container.id)
        try:
            container.start()
            code = container.wait(timeout=120)["StatusCode"]
            return code, container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
            self.containers.remove(container.id)

    def hand_to_www_data(self, volume: str) -> None:
        # what the image's entrypoint does to a root-owned directory, as root with the site's capabilities
        code, output = self.run(volume, "chown 33:33 /var/www/html", user="0:0")
        assert code == 0, output

    def drop_volume(self, volume: str) -> None:
        self.client.volumes.get(volume).remove(force=True)
        self.volumes.remove(volume)

    def cleanup(self) -> None:
        for container in list(self.containers):
            try:
                self.client.containers.get(container).remove(force=True)
            except docker.errors.NotFound:
                pass
        for volume in list(self.volumes):
            try:
                self.client.volumes.get(volume).remove(force=True)
            except docker.errors.NotFound:
                pass
        for name in self.sites:
            try:
                self.quotas.remove(name)
            except InfraError:
                pass
        self.quotas.purge_stale()


@pytest.fixture
def lab(client, quotas) -> Iterator[Lab]:
    made = Lab(client, quotas)
    yield made
    made.cleanup()


def free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


def test_a_site_cannot_write_past_its_quota_and_others_can(lab: Lab, quotas: DiskQuotas) -> None:
    a, volume_a = lab.site(32 * MiB)
    b, volume_b = lab.site(32 * MiB)
    for volume in (volume_a, volume_b):
        lab.hand_to_www_data(volume)
    host = os.path.dirname(quotas.root)  # the host's filesystem (the lab's image lives there)
    free_before = free_bytes(host)

    # 512 MiB attempted, as www-data and as root: each stops at the limit
    code, output = lab.run(volume_a, "dd if=/dev/zero of=/var/www/html/fill bs=1M count=256 conv=fsync")
    assert code != 0 and any(text in output for text in QUOTA_EXCEEDED), output
    code, output = lab.run(volume_a, "dd if=/dev/zero of=/var/www/html/root bs=1M count=256 conv=fsync", user="0:0")
    assert code != 0 and any(text in output for text in QUOTA_EXCEEDED), output
    code, output = lab.run(volume_a, "echo x > /var/www/html/one-more")
    assert code != 0 and any(text in output for text in QUOTA_EXCEEDED), output
    # the host lost at most the site's limit (and some metadata), not what was attempted
    assert free_before - free_bytes(host) < 128 * MiB

    # the site beside it still writes
    code, output = lab.run(volume_b, "dd if=/dev/zero of=/var/www/html/fill bs=1M count=16 conv=fsync")
    assert code == 0, output

    usage = quotas.usage_all(sync=True)
    used_a, limit_a = usage[a]
    used_b, limit_b = usage[b]
    assert limit_a == limit_b == 32 * MiB
    assert 24 * MiB <= used_a <= 32 * MiB
    assert 16 * MiB <= used_b < 20 * MiB
    assert quotas.usage(a) == usage[a]

    # shrinking below what it uses is refused, for good; the limit stays
    with pytest.raises(QuotaBelowUsage) as refused:
        quotas.set_limit(a, 8 * MiB)
    assert refused.value.permanent and isinstance(refused.value, ValueError)
    assert quotas.usage(a)[1] == 32 * MiB

    # grown: the same write goes through at once
    quotas.set_limit(a, 96 * MiB)
    code, output = lab.run(volume_a, "dd if=/dev/zero of=/var/www/html/more bs=1M count=48 conv=fsync")
    assert code == 0, output
    used_a, limit_a = quotas.usage(a, sync=True)
    assert limit_a == 96 * MiB and used_a >= 72 * MiB
    # shrunk, but not below usage
    quotas.set_limit(a, used_a + 4 * MiB)
    assert quotas.usage(a)[1] == used_a + 4 * MiB

    # removed: the directory, its record and its quota
    lab.drop_volume(volume_a)
    assert quotas.remove(a) is None
    assert not os.path.exists(quotas.path(a))
    assert not os.path.exists(os.path.join(quotas.root, RECORDS_DIR, a))
    assert a not in quotas.usage_all() and b in quotas.usage_all()
    assert quotas.owned(a) is None and quotas.remove(a) is None


def test_ensure_is_idempotent_recovers_and_leaves_foreign_directories(lab: Lab, quotas: DiskQuotas) -> None:
    site, _volume = lab.site(16 * MiB)
    record = os.path.join(quotas.root, RECORDS_DIR, site)
    with open(record) as f:
        first = f.read()
    assert quotas.ensure(site, 16 * MiB) == quotas.path(site)
    with open(record) as f:
        assert f.read() == first
    assert quotas.owned(site) is True
    assert os.stat(quotas.path(site)).st_uid == 0 and os.stat(quotas.path(site)).st_mode & 0o777 == 0o755

    # a crash between creating the subvolume and recording its id: the next ensure finishes
    with open(record, "w") as f:
        f.write(f"owner={settings.WPFLEET_OWNER}\nsubvolume=\n")
    quotas.ensure(site, 20 * MiB)
    with open(record) as f:
        assert f.read() == first
    assert quotas.usage(site)[1] == 20 * MiB

    # a directory that is not ours is never used nor removed
    stranger = unique_name("q")
    os.mkdir(quotas.path(stranger))
    try:
        assert quotas.owned(stranger) is False
        with pytest.raises(ForeignResource):
            quotas.ensure(stranger, 16 * MiB)
        assert "left untouched" in (quotas.remove(stranger) or "")
        assert os.path.isdir(quotas.path(stranger))
        assert stranger not in quotas.usage_all()
    finally:
        os.rmdir(quotas.path(stranger))

    # another owner's site is never used nor removed
    other = DiskQuotas(quotas.root, owner="someone-else")
    with pytest.raises(ForeignResource):
        other.ensure(site, 16 * MiB)
    assert "left untouched" in (other.remove(site) or "")
    assert site not in other.usage_all() and site in quotas.usage_all()

    with pytest.raises(InfraError) as bad:
        quotas.ensure("../etc", 16 * MiB)
    assert bad.value.permanent


def test_a_subvolume_the_site_makes_stays_within_its_quota(lab: Lab, quotas: DiskQuotas) -> None:
    """A site may create a btrfs subvolume in its directory (an unprivileged ioctl): it counts all the same."""
    site, volume = lab.site(32 * MiB)
    lab.hand_to_www_data(volume)
    code, output = lab.run(volume, PERL_SUBVOLUME, entrypoint="perl")
    assert code == 0 and "created" in output, output
    code, output = lab.run(volume, "dd if=/dev/zero of=/var/www/html/nested/fill bs=1M count=128 conv=fsync")
    assert code != 0 and any(text in output for text in QUOTA_EXCEEDED), output
    used, limit = quotas.usage(site, sync=True)
    assert 24 * MiB <= used <= limit == 32 * MiB

    lab.drop_volume(volume)
    assert quotas.remove(site) is None
    assert not os.path.exists(quotas.path(site))


def _seeded(lab: Lab, volume: str) -> docker.models.containers.Container:
    """Create (not start) a PHP container mounting the volume as PHP does (sites.provisioning.steps.php_mounts)."""
    mounts = [Mount(target="/var/www/html", source=volume, type="volume")]
    seed_from = settings.WPFLEET_PHP_SEED_FROM or "/usr/src/wordpress"
    mounts.append(Mount(target=seed_from, source=volume, type="volume"))
    container = lab.client.containers.create(
        settings.WPFLEET_PHP_IMAGE, labels=LABELS, mounts=mounts, network_disabled=True
    )
    lab.containers.append(container.id)
    return container


def test_docker_seeds_a_bind_volume_from_the_image(lab: Lab, quotas: DiskQuotas) -> None:
    site, volume = lab.site(256 * MiB)
    started = time.monotonic()
    container = _seeded(lab, volume)
    seconds = time.monotonic() - started
    path = quotas.path(site)
    assert os.path.isfile(os.path.join(path, "index.php"))
    assert os.path.isfile(os.path.join(path, "wp-includes", "version.php"))
    # the engine copies the image directory's owner too: www-data, as the entrypoint would
    assert os.stat(path).st_uid == 33
    used, _limit = quotas.usage(site, sync=True)
    assert used > 40 * MiB
    print(f"seeded {used / MiB:.0f} MiB into a bind volume in {seconds:.2f}s (container create)")
    container.remove(force=True)
    lab.containers.remove(container.id)


def test_seeding_past_the_quota_fails_the_container_create(lab: Lab, quotas: DiskQuotas) -> None:
    """A limit smaller than WordPress: the engine's copy stops, and says why."""
    _site, volume = lab.site(16 * MiB)
    with pytest.raises(APIError) as failed:
        _seeded(lab, volume)
    assert "disk quota exceeded" in str(failed.value).lower()
