"""What the API and the admin do to sites: one implementation for both."""

from __future__ import annotations

from django.conf import settings
import datetime as dt

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import Job
from jobs.queue import enqueue
from sites.models import Site
from sites.naming import SiteNames
from sites.validation import taken_message, validate_site_name


# A repair that has not finished after this long died with its worker.
REPAIR_LEASE = dt.timedelta(minutes=5)


class SiteNameTaken(Exception):
    def __init__(self, name: str):
        super().__init__(taken_message(name))


class SiteBusy(Exception):
    """Another job of the site is open (pending, running, or awaiting a retry)."""


def _open_job(site: Site, job_type: str) -> Job:
    job = Job.objects.create(
        site=site, site_name=site.name, type=job_type, max_attempts=settings.WPFLEET_MAX_ATTEMPTS
    )
    # The conditional UPDATE is the lock: it fails if another job holds the
    # site. A deprovision moves the site to DEPROVISIONING in the same UPDATE.
    fields = {"current_job": job, "last_job": job}
    if job_type == Job.Type.DEPROVISION:
        fields["status"] = Site.Status.DEPROVISIONING
    idle = Site.objects.filter(pk=site.pk, current_job__isnull=True).filter(
        Q(repairing_since__isnull=True) | Q(repairing_since__lt=timezone.now() - REPAIR_LEASE)
    )
    if idle.update(**fields) != 1:
        raise SiteBusy(f"site {site.name} already has a job in progress (or is being repaired)")
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def create_site(name: object) -> Site:
    """Validate, insert the Site and its PROVISION job in one transaction, enqueue after commit."""
    name = validate_site_name(name)
    if Site.objects.filter(name=name).exists():
        raise SiteNameTaken(name)
    try:
        with transaction.atomic():
            site = Site.objects.create(name=name, domain=SiteNames(name).domain)
            _open_job(site, Job.Type.PROVISION)
    except IntegrityError:
        # Lost the race to a concurrent request for the same name.
        raise SiteNameTaken(name) from None
    site.refresh_from_db()
    return site


def delete_site(site: Site) -> Job:
    """Start deprovisioning; SiteBusy while another job of the site is open."""
    with transaction.atomic():
        return _open_job(site, Job.Type.DEPROVISION)


def retry_site(site: Site) -> Job:
    """Run the site's finally-failed job again, as a fresh job with fresh attempts."""
    last = site.last_job
    if last is None or not (last.status == Job.Status.FAILED and last.is_final):
        raise SiteBusy(f"site {site.name} has no failed job to retry")
    with transaction.atomic():
        return _open_job(site, last.type)
