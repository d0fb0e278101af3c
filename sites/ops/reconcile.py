"""Bringing ACTIVE sites back to what they should be, without an operator.

After the Docker engine restarts (cleanly, or after a crash when even
`unless-stopped` containers stay Exited), or when someone removed a piece by
hand, each ACTIVE site is compared with what its steps describe
(sites.provisioning.steps: one ``observe`` per step) and a step whose
resources are missing, stopped or drifted is applied again (every apply is
idempotent, and refuses what is not ours); the drift found is recorded on
the site.

A pass's cost does not grow with Docker calls per site:
- containers, volumes and networks are each listed once, by label; the
  databases, accounts, installs and routes once each (``View(bulk=True)``);
- the nginx checks compare fingerprints recorded on the site when its nginx
  was configured (``Site.applied``: the container, its endpoint on the
  backend, its aliases, its server block) with what the listing shows and
  what the site should have; only a site whose fingerprint differs is
  inspected. An edit inside a container leaves no trace in a listing, so
  WPFLEET_RECONCILE_DEEP_CHECKS sites per pass, in turn, are checked for
  real (their server block read);
- sites found in order are marked checked in one UPDATE.
Repairs run WPFLEET_RECONCILE_PARALLEL at once: after an engine crash every
site needs one, and most only need their two containers started.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from jobs.redaction import redact
from sites.models import Site
from sites.ops.cleanup import remove_emptied_volumes
from sites.provisioning.handlers import site_context
from sites.provisioning.shards import attach_caddy, is_shard
from sites.provisioning.steps import PROVISION_STEPS, STOPPED, Infra, Resource, View, step_named

log = logging.getLogger("wpfleet.reconcile")

# Steps that must be applied again after the step in the key was: PHP-FPM
# lives in nginx's network namespace (a re-created or restarted nginx has a
# new one), and nginx loads its server block, which names PHP-FPM's port,
# when it starts.
_FOLLOWERS = {"nginx": ("php", "nginx_config"), "php": ("nginx_config",)}
# Containers that only need starting, in this order (PHP-FPM joins the
# network namespace of a running nginx).
_STARTABLE = ("nginx", "php")


def _observe_all(site: Site, view: View, infra: Infra, db_password: str | None = None) -> dict[str, list[Resource]]:
    ctx = site_context(site, infra, db_password=db_password)
    return {step.name: step.observe(ctx, view) for step in PROVISION_STEPS}


def reconcile_site(site: Site, view: View, infra: Infra) -> list[str]:
    """Repair one site; returns what was wrong."""
    ctx = site_context(site, infra)
    observed = {step.name: step.observe(ctx, view) for step in PROVISION_STEPS}
    # A foreign resource under one of the site's names is reported, never touched.
    drift = [f"{r} (left alone)" for found in observed.values() for r in found if r.state == "foreign"]
    wrong = {name: [r for r in found if r.needs_repair] for name, found in observed.items()}
    wrong = {name: found for name, found in wrong.items() if found}
    if wrong and set(wrong) <= set(_STARTABLE) and all(r.state == STOPPED for found in wrong.values() for r in found):
        # Only stopped (an engine that crashed): their files, networks and
        # configuration are all still there, so starting them is the repair.
        for name in _STARTABLE:
            for resource in wrong.get(name, ()):
                listed = view.container(resource.name)
                infra.docker.start_listed(listed.id, resource.name)
                drift.append(f"{resource}: started")
        php = view.container(ctx.names.php)
        if "nginx" in wrong and "php" not in wrong and php is not None:
            # PHP-FPM ran on in the network namespace of the nginx that
            # stopped; the started nginx has a new one: PHP joins it.
            infra.docker.restart_listed(php.id, ctx.names.php)
            drift.append(f"PHP-FPM container {ctx.names.php}: restarted in {ctx.names.nginx}'s network namespace")
        return drift
    repaired: set[str] = set()
    for step in PROVISION_STEPS:
        if step.name in repaired or step.name not in wrong:
            continue
        drift.extend(str(resource) for resource in wrong[step.name])
        step.apply(ctx)
        repaired.add(step.name)
        for follower in _FOLLOWERS.get(step.name, ()):
            step_named(follower).apply(ctx)
            repaired.add(follower)
    return drift


def needs_repair(site: Site, view: View, infra: Infra) -> bool:
    """Whether any step observes something of the site missing, stopped, drifted or foreign (no change made)."""
    observed = _observe_all(site, view, infra, db_password="")
    return any(r.needs_repair or r.state == "foreign" for found in observed.values() for r in found)


def deep_sample(names: list[str], per_pass: int, now: float | None = None) -> frozenset[str]:
    """The sites whose nginx a pass checks for real: about ``per_pass`` of them, each in its turn.

    Each site has a fixed slot (crc32 of its name) among ``turns`` = sites
    / per_pass; the pass of minute m takes the slot m mod turns. So every
    site is read once every ``turns`` minutes, whatever the passes' timing.
    """
    if per_pass <= 0 or not names:
        return frozenset()
    turns = max(1, math.ceil(len(names) / per_pass))
    slot = int((time.time() if now is None else now) // 60) % turns
    return frozenset(name for name in names if zlib.crc32(name.encode()) % turns == slot)


def attach_caddy_to_shards(infra: Infra, view: View) -> list[str]:
    """Caddy on every backend shard of this owner (re-created by the host's set-up, it may have lost some)."""
    shards = [name for name, network in view.networks().items() if is_shard(network.attrs.get("Labels"))]
    return [
        f"container {infra.caddy.container_name} attached to {name}" for name in shards if attach_caddy(infra, name)
    ]


def _repair(site: Site, view: View, infra: Infra, now, in_thread: bool) -> list[str] | None:
    """Repair one site under its repair claim; the drift found, or None when a job holds it now."""
    try:
        # The same conditional UPDATE as a job's: skip a site a job has just taken.
        if not site.claim_for_repair():
            return None
        try:
            drift = reconcile_site(site, view, infra)
        except Exception as exc:  # one broken site must not stop the others' repair
            # Redacted like a job's error: an adapter's message may quote a secret.
            drift = [f"repair failed: {redact(str(exc), site.secrets())}"]
            log.warning("reconcile %s: %s", site.name, drift[0])
        fields: dict[str, object] = {"checked_at": now, "drifted": bool(drift)}
        if drift:
            drift = [redact(line, site.secrets()) for line in drift]
            fields["drift"] = f"{now:%Y-%m-%d %H:%M:%S} UTC: " + "; ".join(drift)
        site.end_repair(**fields)
        return drift
    finally:
        if in_thread:
            connection.close()


def _emptied_volumes(infra: Infra, view: View | None) -> dict[str, list[str]]:
    """The volumes deleted sites left to the engine, removed once it lets go (sites.ops.cleanup)."""
    removed = remove_emptied_volumes(infra, None if view is None else view.volumes())
    if not removed:
        return {}
    return {"(volumes)": [f"volume {name} of a deleted site: removed (the engine had held it)" for name in removed]}


def reconcile_all(infra: Infra | None = None) -> dict[str, list[str]]:
    """Check every ACTIVE site that no job holds; returns {site: drift} for those repaired."""
    infra = infra or Infra()
    sites = list(
        Site.objects.filter(status=Site.Status.ACTIVE, current_job__isnull=True)
        .prefetch_related("domains")
        .order_by("name")
    )
    if not sites:
        return _emptied_volumes(infra, None)
    repaired: dict[str, list[str]] = {}
    if infra.caddy.ensure_running():
        repaired["(caddy)"] = [f"container {infra.caddy.container_name} was stopped: started"]
    view = View(
        infra, bulk=True, deep=deep_sample([site.name for site in sites], settings.WPFLEET_RECONCILE_DEEP_CHECKS)
    )
    repaired.update(_emptied_volumes(infra, view))
    attached = attach_caddy_to_shards(infra, view)
    if attached:
        repaired.setdefault("(caddy)", []).extend(attached)
    now = timezone.now()
    in_order: list[int] = []
    broken: list[Site] = []
    for site in sites:
        # Look first, without holding the site: a site in order is only
        # marked checked, so a DELETE at that moment is not refused as busy.
        try:
            wrong = needs_repair(site, view, infra)
        except Exception:
            wrong = True  # the repair below reports what failed
        (broken.append(site) if wrong else in_order.append(site.pk))
    for start in range(0, len(in_order), 500):
        Site.objects.filter(pk__in=in_order[start : start + 500]).update(checked_at=now, drifted=False)
    parallel = min(settings.WPFLEET_RECONCILE_PARALLEL, len(broken))
    if parallel > 1:

        def repair_in_thread(site: Site) -> list[str] | None:
            close_old_connections()
            return _repair(site, view, infra, now, in_thread=True)

        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="reconcile") as pool:
            results = list(pool.map(repair_in_thread, broken))
    else:
        results = [_repair(site, view, infra, now, in_thread=False) for site in broken]
    for site, drift in zip(broken, results, strict=True):
        if drift:
            repaired[site.name] = drift
    if repaired:
        log.warning("reconcile repaired %d site(s): %s", len(repaired), repaired)
    return repaired
