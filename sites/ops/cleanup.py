"""Clearing sites left stuck, and resources that belong to no site.

A zombie is a site whose last job failed for good (Site.objects.zombies()).
Rollback normally leaves nothing behind; this removes what a crash or a
failed undo left (every step's undo, ours only), and then the rows. Orphans
are resources of this owner whose site has no row: found by label, database
comment, account record and route marker. Last, this owner's backend
shards that no site is on any more are removed (sites.provisioning.shards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import QuerySet

from sites.models import Site
from sites.models.validation import is_valid_name
from sites.provisioning.orchestrator import Provisioner
from sites.provisioning.shards import retire_empty_shards
from sites.provisioning.steps import Infra


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
