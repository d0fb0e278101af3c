"""Bringing ACTIVE sites back to what they should be, without an operator.

After the Docker engine restarts (cleanly, or after a crash when even
`unless-stopped` containers stay Exited), or when someone removed a piece by
hand, each ACTIVE site is compared with what should exist: what is stopped is
started, what is missing is rebuilt by the provisioning step that owns it
(every apply is idempotent), Caddy is reloaded once for all, and the drift
found is recorded on the site.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.utils import timezone

from jobs.runner import redact
from sites.models import Site
from sites.provisioner import (
    CaddySnippetStep,
    Context,
    DatabaseStep,
    Infra,
    NetworkStep,
    NginxConfigStep,
    NginxStep,
    PhpStep,
    VolumeStep,
)

log = logging.getLogger("wpfleet.reconcile")


class Inventory:
    """What exists now, read with a handful of calls whatever the number of sites."""

    def __init__(self, infra: Infra):
        docker = infra.docker
        self.containers = {c.name: c for c in docker.list_owned("container")}
        self.volumes = {v.name for v in docker.list_owned("volume")}
        self.networks = {n.name for n in docker.list_owned("network")}
        self.databases = set(infra.db.site_databases())
        self.snippets = set(infra.caddy.snippet_sites())
        self.db_users = infra.db.users_at(settings.WPFLEET_DB_USER_HOST)


def reconcile_site(site: Site, inventory: Inventory, infra: Infra) -> tuple[list[str], bool]:
    """Repair one site; returns (what was wrong, whether Caddy must reload)."""
    n = site.names
    ctx = Context(site=site.name, db_password=site.db_password, infra=infra)
    drift: list[str] = []
    if n.database not in inventory.databases or n.db_user not in inventory.db_users:
        drift.append("database or its user missing")
        DatabaseStep().apply(ctx)
    if n.volume not in inventory.volumes:
        drift.append(f"volume {n.volume} missing")
        VolumeStep().apply(ctx)
    if n.network not in inventory.networks:
        drift.append(f"network {n.network} missing")
        NetworkStep().apply(ctx)
    php = inventory.containers.get(n.php)
    if php is None or php.status != "running":
        drift.append(f"container {n.php} {'missing' if php is None else php.status}")
        PhpStep().apply(ctx)  # creates it if missing, starts it if stopped
    nginx = inventory.containers.get(n.nginx)
    if nginx is None or nginx.status != "running":
        drift.append(f"container {n.nginx} {'missing' if nginx is None else nginx.status}")
        NginxStep().apply(ctx)
        # Writes the server block again and starts (or reloads) nginx.
        NginxConfigStep().apply(ctx)
    elif not infra.docker.file_exists(nginx, n.nginx_config):
        drift.append("nginx server block missing")
        NginxConfigStep().apply(ctx)
    reload_needed = False
    if site.name not in inventory.snippets:
        drift.append("caddy snippet missing")
        CaddySnippetStep().apply(ctx)
        reload_needed = True
    return drift, reload_needed


def reconcile_all(infra: Infra | None = None) -> dict[str, list[str]]:
    """Check every ACTIVE site that no job holds; returns {site: drift} for those repaired."""
    infra = infra or Infra()
    sites = list(Site.objects.filter(status=Site.Status.ACTIVE, current_job__isnull=True).order_by("name"))
    if not sites:
        return {}
    repaired: dict[str, list[str]] = {}
    if infra.caddy.ensure_running():
        repaired["(caddy)"] = [f"container {infra.caddy.container_name} was stopped: started"]
    inventory = Inventory(infra)
    reload_needed = False
    now = timezone.now()
    for site in sites:
        # The same conditional UPDATE as a job's: skip a site a job has just taken.
        claimed = Site.objects.filter(
            pk=site.pk, status=Site.Status.ACTIVE, current_job__isnull=True, repairing_since__isnull=True
        ).update(repairing_since=timezone.now())
        if claimed != 1:
            continue
        try:
            drift, needs_reload = reconcile_site(site, inventory, infra)
        except Exception as exc:  # one broken site must not stop the others' repair
            # Redacted like a job's error: an adapter's message may quote a secret.
            drift, needs_reload = [f"repair failed: {redact(str(exc), site.secrets())}"], False
            log.warning("reconcile %s: %s", site.name, drift[0])
        finally:
            Site.objects.filter(pk=site.pk).update(repairing_since=None)
        reload_needed |= needs_reload
        fields = {"checked_at": now, "drifted": bool(drift)}
        if drift:
            drift = [redact(line, site.secrets()) for line in drift]
            repaired[site.name] = drift
            fields["drift"] = f"{now:%Y-%m-%d %H:%M:%S} UTC: " + "; ".join(drift)
        Site.objects.filter(pk=site.pk).update(**fields)
    if reload_needed:
        infra.caddy.reload_covering(time.time())
    if repaired:
        log.warning("reconcile repaired %d site(s): %s", len(repaired), repaired)
    return repaired
