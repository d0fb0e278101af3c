"""What the API and the admin do to sites: one implementation for both."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction

from jobs.models import Job
from jobs.queue import enqueue
from sites.models import Site, SiteBusy
from sites.models.naming import SiteNames
from sites.models.validation import (
    taken_message,
    validate_admin_email,
    validate_admin_user,
    validate_site_name,
    validate_title,
)
from sites.ops.wordpress import Credentials, LoginLink, SiteNotActive, WordPressUserMissing
from sites.ops.wordpress import login_link as _login_link
from sites.ops.wordpress import new_admin_password as _new_admin_password

__all__ = [
    "Credentials",
    "LoginLink",
    "SiteBusy",
    "SiteNameTaken",
    "SiteNotActive",
    "WordPressUserMissing",
    "create_site",
    "delete_site",
    "login_link",
    "new_admin_password",
    "retry_site",
]


class SiteNameTaken(Exception):
    def __init__(self, name: str):
        super().__init__(taken_message(name))


def _open(site: Site, job_type: str) -> Job:
    job = site.open_job(job_type)
    transaction.on_commit(lambda: enqueue(job.pk))
    return job


def create_site(name: object, *, title: object = None, admin_email: object = None, admin_user: object = None) -> Site:
    """Validate, insert the Site and its PROVISION job in one transaction, enqueue after commit.

    ``title``, ``admin_email`` and ``admin_user`` are WordPress's; each may be
    left out (None): the site's name, WPFLEET_DEFAULT_ADMIN_EMAIL, a random
    user name.
    """
    name = validate_site_name(name)
    profile: dict[str, str] = {
        "title": name if title is None else validate_title(title),
        "admin_email": settings.WPFLEET_DEFAULT_ADMIN_EMAIL
        if admin_email is None
        else validate_admin_email(admin_email),
    }
    if admin_user is not None:
        profile["admin_user"] = validate_admin_user(admin_user)
    if Site.objects.filter(name=name).exists():
        raise SiteNameTaken(name)
    try:
        with transaction.atomic():
            site = Site.objects.create(name=name, domain=SiteNames(name).domain, **profile)
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


def new_admin_password(site: Site) -> Credentials:
    """A new random password for the site's WordPress admin, for the caller's eyes only.

    SiteNotActive unless the site is ACTIVE and no job holds it.
    """
    _require_live(site)
    return _new_admin_password(site)


def login_link(site: Site) -> LoginLink:
    """A one-time link into the site's wp-admin (SiteNotActive unless the site is live and idle)."""
    _require_live(site)
    return _login_link(site)


def _require_live(site: Site) -> None:
    site.refresh_from_db()
    if site.status != Site.Status.ACTIVE or site.current_job_id is not None:
        state = site.get_status_display() if site.status != Site.Status.ACTIVE else "busy with a job"
        raise SiteNotActive(f"site {site.name} is {state.lower()}: only an active site has a WordPress to log in to")
