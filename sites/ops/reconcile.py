"""Bringing ACTIVE sites back to what they should be, without an operator.

After the Docker engine restarts (cleanly, or after a crash when even
`unless-stopped` containers stay Exited), or when someone removed a piece by
hand, each ACTIVE site is compared with what its steps describe
(sites.provisioning.steps: one ``observe`` per step, on a bulk listing read
once per pass): a step whose resources are missing, stopped or drifted is
applied again (every apply is idempotent, and refuses what is not ours)
and the drift found is recorded on the site.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from jobs.redaction import redact
from sites.models import Site
from sites.provisioning.handlers import site_context
from sites.provisioning.steps import PROVISION_STEPS, Infra, View, step_named

log = logging.getLogger("wpfleet.reconcile")

# Steps that must be applied again after the step in the key was (nginx
# loads its server block when it starts: a re-created container needs it).
_FOLLOWERS = {"nginx": ("nginx_config",)}


def reconcile_site(site: Site, view: View, infra: Infra) -> list[str]:
    """Repair one site; returns what was wrong."""
    ctx = site_context(site, infra)
    drift: list[str] = []
    repaired: set[str] = set()
    for step in PROVISION_STEPS:
        if step.name in repaired:
            continue
        observed = step.observe(ctx, view)
        # A foreign resource under one of the site's names is reported, never touched.
        drift.extend(f"{resource} (left alone)" for resource in observed if resource.state == "foreign")
        wrong = [resource for resource in observed if resource.needs_repair]
        if wrong:
            drift.extend(str(resource) for resource in wrong)
            step.apply(ctx)
            repaired.add(step.name)
            for follower in _FOLLOWERS.get(step.name, ()):
                step_named(follower).apply(ctx)
                repaired.add(follower)
    return drift


def needs_repair(site: Site, view: View, infra: Infra) -> bool:
    """Whether any step observes something of the site missing, stopped, drifted or foreign (no change made)."""
    ctx = site_context(site, infra, db_password="")
    return any(r.needs_repair or r.state == "foreign" for step in PROVISION_STEPS for r in step.observe(ctx, view))


def reconcile_all(infra: Infra | None = None) -> dict[str, list[str]]:
    """Check every ACTIVE site that no job holds; returns {site: drift} for those repaired."""
    infra = infra or Infra()
    sites = list(Site.objects.filter(status=Site.Status.ACTIVE, current_job__isnull=True).order_by("name"))
    if not sites:
        return {}
    repaired: dict[str, list[str]] = {}
    if infra.caddy.ensure_running():
        repaired["(caddy)"] = [f"container {infra.caddy.container_name} was stopped: started"]
    view = View(infra, bulk=True)
    now = timezone.now()
    for site in sites:
        # Look first, without holding the site: a site in order is only
        # marked checked, so a DELETE at that moment is not refused as busy.
        try:
            wrong = needs_repair(site, view, infra)
        except Exception:
            wrong = True  # the repair below reports what failed
        if not wrong:
            Site.objects.filter(pk=site.pk).update(checked_at=now, drifted=False)
            continue
        # The same conditional UPDATE as a job's: skip a site a job has just taken.
        if not site.claim_for_repair():
            continue
        try:
            drift = reconcile_site(site, view, infra)
        except Exception as exc:  # one broken site must not stop the others' repair
            # Redacted like a job's error: an adapter's message may quote a secret.
            drift = [f"repair failed: {redact(str(exc), site.secrets())}"]
            log.warning("reconcile %s: %s", site.name, drift[0])
        fields: dict[str, object] = {"checked_at": now, "drifted": bool(drift)}
        if drift:
            drift = [redact(line, site.secrets()) for line in drift]
            repaired[site.name] = drift
            fields["drift"] = f"{now:%Y-%m-%d %H:%M:%S} UTC: " + "; ".join(drift)
        site.end_repair(**fields)
    if repaired:
        log.warning("reconcile repaired %d site(s): %s", len(repaired), repaired)
    return repaired
