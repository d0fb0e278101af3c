"""Backend networks in shards: Caddy reaches each site's nginx on one of them.

A Linux bridge holds at most 1,024 ports, so one backend network for every
site would stop the 1,024th site. Each site's nginx joins one shard, and a
shard takes at most WPFLEET_BACKEND_SHARD_SIZE sites (default 500: half the
bridge, so concurrent provisioning, Caddy and anything else attached never
reach the limit). Caddy is attached to every shard: Docker's DNS answers it
for a site's alias on whichever shard the site is.

- Shard 0 is WPFLEET_BACKEND_NETWORK, made by the host's set-up
  (lab/up.sh) and never changed here.
- Shard k (k ≥ 1) is ``<WPFLEET_BACKEND_NETWORK>-<owner>-<k>``, made here
  with the owner's labels, on the first /22 of WPFLEET_BACKEND_SHARD_POOL
  that no network uses; Caddy is attached as it is made. Shards stay when
  they empty (a new site fills them again); the cleanup (manage.py
  cleanup_zombies) retires those that no site is on nor recorded for.

A site's shard is recorded on its row (``Site.backend_network``) when its
nginx step first runs; a site made before shards has none recorded and
stays on shard 0. docs/performance.md ("Address plan") has the numbers.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from django.conf import settings

from sites.infra.errors import InfraError, InvalidConfiguration

if TYPE_CHECKING:
    from sites.provisioning.steps import Context, Infra

log = logging.getLogger("wpfleet.shards")

SHARD_ROLE = "backend-shard"
SHARD_PREFIX = 22  # 1,021 addresses: room for any shard size up to 1,000


def shard_name(index: int) -> str:
    if index == 0:
        return settings.WPFLEET_BACKEND_NETWORK
    return f"{settings.WPFLEET_BACKEND_NETWORK}-{settings.WPFLEET_OWNER}-{index}"


def shard_labels(index: int) -> dict[str, str]:
    return {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.role": SHARD_ROLE, "wpfleet.shard": str(index)}


def is_shard(labels: dict | None) -> bool:
    labels = labels or {}
    return labels.get("wpfleet.owner") == settings.WPFLEET_OWNER and labels.get("wpfleet.role") == SHARD_ROLE


def pool_subnets() -> list[ipaddress.IPv4Network]:
    return list(settings.WPFLEET_BACKEND_SHARD_POOL.subnets(new_prefix=SHARD_PREFIX))


def shard_slots() -> int:
    """How many sites all the shards this host can have hold (shard 0 and one per /22 of the pool)."""
    return (1 + len(pool_subnets())) * settings.WPFLEET_BACKEND_SHARD_SIZE


def owned_shards(summaries: list[dict]) -> dict[int, str]:
    """{index: name} of this owner's shards among a network listing, shard 0 included."""
    found = {0: settings.WPFLEET_BACKEND_NETWORK}
    for network in summaries:
        labels = network.get("Labels") or {}
        if is_shard(labels) and str(labels.get("wpfleet.shard", "")).isdigit():
            found[int(labels["wpfleet.shard"])] = str(network.get("Name"))
    return dict(sorted(found.items()))


def _free_subnet(summaries: list[dict]) -> str:
    used = []
    for network in summaries:
        for config in ((network.get("IPAM") or {}).get("Config")) or []:
            try:
                used.append(ipaddress.ip_network(config.get("Subnet", ""), strict=False))
            except ValueError:
                continue
    for candidate in pool_subnets():
        if not any(candidate.overlaps(other) for other in used):
            return str(candidate)
    raise InvalidConfiguration(
        "docker",
        f"no free /{SHARD_PREFIX} left in WPFLEET_BACKEND_SHARD_POOL={settings.WPFLEET_BACKEND_SHARD_POOL} "
        "for another backend shard",
    )


def attach_caddy(infra: Infra, network: str) -> bool:
    """Attach Caddy to the shard unless it is; True if it was attached here."""
    caddy = infra.docker.container(infra.caddy.container_name)
    if caddy is None:
        raise InfraError("caddy", f"container {infra.caddy.container_name} does not exist")
    attached = (caddy.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    if network in attached:
        return False
    infra.docker.connect(network, caddy)
    log.info("attached %s to backend shard %s", caddy.name, network)
    return True


def ensure_shard(infra: Infra, index: int, summaries: list[dict] | None = None) -> str:
    """The shard's network, made if missing (never shard 0: the host's set-up makes it), with Caddy on it."""
    name = shard_name(index)
    if index == 0:
        if infra.docker.network(name) is None:
            raise InfraError("docker", f"backend network {name} does not exist (the host's set-up makes it)")
    elif infra.docker.network(name) is None:
        subnet = _free_subnet(summaries if summaries is not None else infra.docker.network_summaries())
        if infra.docker.ensure_network(name, shard_labels(index), subnet=subnet):
            log.info("made backend shard %s (%s)", name, subnet)
    attach_caddy(infra, name)
    return name


def choose_shard(infra: Infra) -> str:
    """A shard with room for one more site, made when every one is full.

    Room is counted on the network itself (every container attached, of any
    panel, Caddy included), not in the database: that is what the bridge
    limit counts. Two sites placed at the same moment may both take a
    shard's last place: the size's margin below the bridge's limit holds them.
    """
    summaries = infra.docker.network_summaries()
    shards = owned_shards(summaries)
    for index, name in shards.items():
        members = infra.docker.network_members(name)
        if members is None:
            if index == 0:
                continue
            return ensure_shard(infra, index, summaries)
        # Caddy is one of the members, not a site.
        if members - 1 < settings.WPFLEET_BACKEND_SHARD_SIZE:
            return name
    return ensure_shard(infra, max(shards) + 1, summaries)


def backend_network(ctx: Context) -> str:
    """The site's shard: the one recorded on it, or one chosen now and recorded."""
    from sites.models import Site

    ctx.recorded_backend()  # (reads the row when the context does not say)
    if ctx.backend_network:
        index = shard_index(ctx.backend_network)
        if index is not None:
            ensure_shard(ctx.infra, index)
        return ctx.backend_network
    name = choose_shard(ctx.infra)
    Site.objects.filter(name=ctx.site).update(backend_network=name)
    ctx.backend_network = name
    return name


def shard_index(name: str) -> int | None:
    """The index of one of this owner's shard names (None: not one)."""
    if name == settings.WPFLEET_BACKEND_NETWORK:
        return 0
    prefix = f"{settings.WPFLEET_BACKEND_NETWORK}-{settings.WPFLEET_OWNER}-"
    tail = name.removeprefix(prefix)
    return int(tail) if name.startswith(prefix) and tail.isdigit() else None


def retire_empty_shards(infra: Infra, *, dry_run: bool = False, among: set[str] | None = None) -> list[str]:
    """Remove this owner's shards (never shard 0) that no site is on and no site's row names.

    A row that names a shard keeps it: its site may be between choosing the
    shard and attaching to it (read again just before each removal). Caddy,
    on every shard, is detached first, and attached again when the engine
    refuses the removal (a site attached meanwhile). A site that chose the
    shard and had not yet recorded it finds it gone at its nginx step, whose
    retry makes it again. ``among``: only these names. Returns the shards
    removed (or, dry, that would be).
    """
    from sites.models import Site

    retired = []
    for index, name in owned_shards(infra.docker.network_summaries()).items():
        if index == 0 or (among is not None and name not in among):
            continue
        if Site.objects.filter(backend_network=name).exists():
            continue
        network = infra.docker.network(name)
        if network is None:
            continue
        members = [member.get("Name") for member in (network.attrs.get("Containers") or {}).values()]
        if any(member != infra.caddy.container_name for member in members):
            continue
        if dry_run:
            retired.append(name)
            continue
        if members:
            infra.docker.disconnect(name, infra.caddy.container_name)
        try:
            note = infra.docker.remove_network(name, shard_labels(index))
        except InfraError:
            attach_caddy(infra, name)
            raise
        if note:
            raise InfraError("docker", note)
        retired.append(name)
        log.info("retired empty backend shard %s", name)
    return retired
