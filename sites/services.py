"""What the API and the admin do to sites: one implementation for both."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from jobs.models import Job
from jobs.queue import enqueue
from sites.models import Site, SiteBusy
from sites.models.naming import SiteNames
from sites.models.validation import taken_message, validate_site_name

__all__ = ["SiteBusy", "SiteNameTaken", "create_site", "delete_site", "retry_site"]


class SiteNameTaken(Exception):
    def __init__(self, name: str):
        super().__init__(taken_message(name))


def _open(site: Site, job_type: str) -> Job:
    job = site.open_job(job_type)
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
            _open(site, Site.JobType.PROVISION)
    except IntegrityError:
        # Lost the race to a concurrent request for the same name.
        raise SiteNameTaken(name) from None
    site.refresh_from_db()
    return site


def delete_site(site: Site) -> Job:
    """Start deprovisioning; SiteBusy while another job of the site is open."""
    with transaction.atomic():
        return _open(site, Site.JobType.DEPROVISION)


def retry_site(site: Site) -> Job:
    """Run the site's failed job again, as a fresh job with fresh attempts."""
    last = site.last_job
    if last is None or last.status != Job.Status.FAILED:
        raise SiteBusy(f"site {site.name} has no failed job to retry")
    with transaction.atomic():
        return _open(site, last.type)
