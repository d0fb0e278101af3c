"""Clearing sites left stuck, and resources that belong to no site.

A zombie is a site whose last job failed for good (Site.objects.zombies()).
Rollback normally leaves nothing behind; this removes what a crash or a
failed undo left (every step's undo, ours only), and then the rows. Orphans
are resources of this owner whose site has no row: found by label, database
comment, account record and route marker. Last, this owner's backend
shards that no site is on any more are removed (sites.provisioning.shards).

remove_emptied_volumes, run by every reconciler pass, removes the volumes a
delete had to leave to the engine (VolumeHeldByEngine) once it lets go.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import QuerySet

from sites.infra.errors import InfraError, VolumeHeldByEngine
from sites.models import Site
from sites.models.validation import is_valid_name
from sites.provisioning.orchestrator import Provisioner
from sites.provisioning.shards import retire_empty_shards
from sites.provisioning.steps import QUOTA_DIRS, Infra

log = logging.getLogger("wpfleet.cleanup")


@dataclass
class CleanupReport:
    dry_run: bool
    actions: list[str] = field(default_factory=list)
    zombies: int = 0
    orphans: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.actions.append(("would " if self.dry_run else "") + text)


def zombie_sites() -> QuerySet[Site]:
    return Site.objects.zombies()


def sites_with_resources(infra: Infra) -> set[str]:
    """Names of the sites that own anything of this owner's: by label, database comment, account record, route marker."""
    found: set[str] = set()
    for kind in ("container", "volume", "network"):
        for resource in infra.docker.list_owned(kind):
            labels = resource.labels if kind == "container" else (resource.attrs.get("Labels") or {})
            if labels.get("wpfleet.site"):
                found.add(labels["wpfleet.site"])
    found.update(infra.db.site_databases().values())
    found.update(infra.db.owned_users().values())
    found.update(infra.caddy.routes().values())
    return found


def _orphan_names(infra: Infra) -> set[str]:
    """Sites that own resources but have no row (listed before the rows are read)."""
    found = sites_with_resources(infra)
    existing = set(Site.objects.filter(name__in=found).values_list("name", flat=True))
    return {name for name in found - existing if name}


def cleanup(*, dry_run: bool = False, sites: list[Site] | None = None, include_orphans: bool = True) -> CleanupReport:
    report = CleanupReport(dry_run=dry_run)
    infra = Infra()
    orphans = _orphan_names(infra) if include_orphans else set()
    targets = list(zombie_sites() if sites is None else sites)
    for site in targets:
        report.zombies += 1
        report.add(f"remove zombie site {site.name} (last job #{site.last_job_id} failed) and its resources")
        if dry_run:
            continue
        try:
            Provisioner(site.name, site.db_password, infra=infra).deprovision()
        except Exception as exc:
            report.errors.append(f"{site.name}: {exc}")
            continue
        Site.objects.filter(pk=site.pk, current_job__isnull=True).delete()
    for name in sorted(orphans):
        if not is_valid_name(name):
            continue
        report.orphans += 1
        report.add(f"remove leftovers of deleted site {name}")
        if dry_run:
            continue
        try:
            Provisioner(name, "", infra=infra).deprovision()
        except Exception as exc:
            report.errors.append(f"{name}: {exc}")
    # The host-wide sweep only (the admin's action clears the sites it was given).
    if include_orphans:
        try:
            for shard in retire_empty_shards(infra, dry_run=dry_run):
                report.add(f"remove empty backend shard {shard}")
        except Exception as exc:
            report.errors.append(f"backend shards: {exc}")
    if not report.actions:
        report.actions.append("nothing to clean up")
    return report


def _quota_directory(options: dict) -> str:
    """The directory a volume's local driver options put its data in: a bind's device, an overlay's upper layer; else ""."""
    if options.get("o") == "bind":
        return options.get("device") or ""
    if options.get("type") == "overlay":
        for option in (options.get("o") or "").split(","):
            key, _, value = option.partition("=")
            if key == "upperdir":
                return value
    return ""


def remove_emptied_volumes(infra: Infra, volumes: Iterable | None = None) -> list[str]:
    """Remove this owner's volumes that a deleted site left bound to its removed quota directory; returns their names.

    A delete removes a site's volumes, then its quota directory. An engine that
    still counts a mount of a volume after a live restore (VolumeHeldByEngine)
    refuses the first until it restarts: the delete goes on, and what stays
    is a name bound to a directory that no longer exists. Only such a volume
    qualifies here: ours, of a site without a row, a bind of one of that
    site's quota directories (QUOTA_DIRS; for an overlay, its upper
    layer) that is gone from the mounted quota
    filesystem. Nothing with data in it can match. One the engine still
    refuses is left for the next pass. ``volumes``: this owner's, as listed
    (a reconciler pass has them); none: listed here.
    """
    quotas = infra.quotas
    if quotas is None:
        return []
    listed = infra.docker.list_owned("volume") if volumes is None else volumes
    emptied: dict[str, list[str]] = {}
    for volume in listed:
        attrs = getattr(volume, "attrs", None) or {}
        options = attrs.get("Options") or {}
        site = (attrs.get("Labels") or {}).get("wpfleet.site") or ""
        if not is_valid_name(site):
            continue
        directory, _, part = _quota_directory(options).rpartition("/")
        if part in QUOTA_DIRS and directory == quotas.path(site) and not os.path.lexists(f"{directory}/{part}"):
            emptied.setdefault(site, []).append(volume.name)
    if not emptied:
        return []
    try:
        quotas.check()  # an unmounted quota filesystem would make every directory look gone
    except InfraError as exc:
        log.warning("volumes of deleted sites left for now: %s", exc)
        return []
    living = set(Site.objects.filter(name__in=list(emptied)).values_list("name", flat=True))
    removed: list[str] = []
    for site, names in sorted(emptied.items()):
        if site in living:
            continue
        for name in sorted(names):
            try:
                note = infra.docker.remove_volume(name, {"wpfleet.owner": settings.WPFLEET_OWNER, "wpfleet.site": site})
            except VolumeHeldByEngine:
                continue  # the engine has not restarted yet
            except InfraError as exc:
                log.warning("volume %s of deleted site %s: %s", name, site, exc)
                continue
            if note is None:
                removed.append(name)
    return removed
