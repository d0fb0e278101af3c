"""What the API and the admin do to sites: one implementation for both."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction

from jobs.models import Job
from jobs.queue import enqueue
from sites.models import Backup, Domain, Site, SiteBusy
from sites.models.naming import SiteNames
from sites.models.php import human, validate_disk_quota, validate_php_settings, validate_php_version
from sites.models.validation import (
    taken_message,
    validate_admin_email,
    validate_admin_user,
    validate_domain,
    validate_site_name,
    validate_title,
)
from sites.ops.capacity import CapacityExhausted, check_capacity
from sites.ops.wordpress import Credentials, LoginLink, SiteNotActive, WordPressUserMissing
from sites.ops.wordpress import login_link as _login_link
from sites.ops.wordpress import new_admin_password as _new_admin_password

__all__ = [
    "CapacityExhausted",
    "Credentials",
    "DomainTaken",
    "BackupsDisabled",
    "add_domain",
    "change_settings",
    "purge_cache",
    "QuotaTooSmall",
    "suspend_site",
    "resume_site",
    "back_up_site",
    "clone_site",
    "restore_site",
    "site_backups",
    "remove_domain",
    "set_primary_domain",
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


class DomainTaken(Exception):
    """The domain already routes to a site of this panel (this one or another)."""


def _open(site: Site, job_type: str, params: dict | None = None) -> Job:
    job = site.open_job(job_type, params=params)
    transaction.on_commit(lambda: enqueue(job.pk, job_type=job.type))
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
    # Before anything is written: a refused site leaves no row and no job.
    check_capacity()
    try:
        with transaction.atomic():
            site = Site.objects.create(name=name, domain=SiteNames(name).domain, **profile)
            _open(site, Site.JobType.PROVISION)
    except IntegrityError:
        # Lost the race to a concurrent request for the same name.
        raise SiteNameTaken(name) from None
    site.refresh_from_db()
    return site


def delete_site(site: Site, *, final_backup: bool = True) -> Job:
    """Start deprovisioning; SiteBusy while another job of the site is open.

    A live site is backed up first (kept WPFLEET_BACKUP_KEEP_DELETED_DAYS):
    a delete can be undone by cloning that backup. ``final_backup=False``
    deletes without it (a broken site whose backup cannot be taken).
    """
    live = site.status in (Site.Status.ACTIVE, Site.Status.SUSPENDED)
    final_backup = final_backup and live and bool(settings.WPFLEET_BACKUP_REPOSITORY)
    params: dict[str, object] = {"final_backup": final_backup}
    if site.status == Site.Status.SUSPENDED:
        # Its PHP container is stopped: the final backup starts it, and a
        # delete that does not happen suspends the site again.
        params["suspended"] = True
    with transaction.atomic():
        return _open(site, Site.JobType.DEPROVISION, params=params)


def retry_site(site: Site) -> Job:
    """Run the site's failed job again, as a fresh job with fresh attempts."""
    last = site.last_job
    if last is None or last.status != Job.Status.FAILED:
        raise SiteBusy(f"site {site.name} has no failed job to retry")
    params = dict(last.params)
    if last.type == Site.JobType.DEPROVISION and last.steps.filter(phase="undo").exists():
        # It had started removing the site: its files or database may be gone,
        # so a final backup could only fail (the failed job took it, if any).
        params["final_backup"] = False
    with transaction.atomic():
        return _open(site, last.type, params=params)


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


# --- a site's own domains ------------------------------------------------------------


def _domain_job(site: Site, change) -> Job:
    """Open the site's DOMAINS job and record the requested change with it, in one transaction."""
    site.refresh_from_db()
    if site.status != Site.Status.ACTIVE:
        raise SiteNotActive(
            f"site {site.name} is {site.get_status_display().lower()}: its domains can change once it is active"
        )
    with transaction.atomic():
        job = _open(site, Site.JobType.DOMAINS)  # SiteBusy while another job holds the site
        change()
    return job


def add_domain(site: Site, domain: object) -> Job:
    """Start serving ``domain`` for the site (its job adds the route, the alias and checks it over HTTPS)."""
    name = validate_domain(domain, own_hostname=site.domain)
    if name == site.domain or Domain.objects.filter(name=name).exists():
        raise DomainTaken(f"{name} is already a domain of {'this' if name == site.domain else 'a'} site")
    try:
        return _domain_job(site, lambda: Domain.objects.create(site=site, name=name))
    except IntegrityError:
        # Lost the race to a concurrent request for the same domain.
        raise DomainTaken(f"{name} is already a domain of a site") from None


def _existing(site: Site, domain: object) -> Domain:
    try:
        name = validate_domain(domain)
    except Exception:
        raise Domain.DoesNotExist(f"site {site.name} has no domain {domain!r}") from None
    found = site.domains.filter(name=name, state=Domain.State.ACTIVE).first()
    if found is None:
        raise Domain.DoesNotExist(f"site {site.name} has no domain {name}")
    return found


def remove_domain(site: Site, domain: object) -> Job:
    """Stop serving one of the site's domains; if it was the primary one, the site's own hostname is home again."""
    found = _existing(site, domain)
    return _domain_job(site, lambda: Domain.objects.filter(pk=found.pk).update(state=Domain.State.REMOVING))


def set_primary_domain(site: Site, domain: object) -> Job:
    """Make WordPress call ``domain`` home (one of the site's domains, or its own hostname)."""
    try:
        name = validate_domain(domain, own_hostname=site.domain)
    except Exception:
        name = None
    found = None if name == site.domain else _existing(site, domain)

    def change() -> None:
        site.domains.update(primary=False)
        if found is not None:
            Domain.objects.filter(pk=found.pk).update(primary=True)

    return _domain_job(site, change)


# --- backups, restore, clone -------------------------------------------------------------


class BackupsDisabled(Exception):
    """No backup repository is configured (WPFLEET_BACKUP_REPOSITORY)."""


def _require_backups() -> None:
    if not settings.WPFLEET_BACKUP_REPOSITORY:
        raise BackupsDisabled("backups are not configured on this panel (WPFLEET_BACKUP_REPOSITORY)")


def site_backups(name: str) -> models.QuerySet[Backup]:
    """The good backups reached under /sites/<name>/: the site's, or a deleted site's of that name.

    Backup.DoesNotExist when there is neither such a site nor a deleted one with backups.
    """
    site = Site.objects.filter(name=name).first()
    backups = Backup.objects.good().of_site_named(name, site)
    if site is None and not backups.exists():
        raise Backup.DoesNotExist(f"no site {name} and no backups of a deleted site of that name")
    return backups


def find_backup(name: str, key: object) -> Backup:
    """One good backup of the site named ``name`` (Backup.DoesNotExist if it is another site's or unknown)."""
    if not isinstance(key, str) or not key:
        raise Backup.DoesNotExist("name a backup by its id")
    found = site_backups(name).filter(key=key).first()
    if found is None:
        raise Backup.DoesNotExist(f"site {name} has no backup {key[:32]}")
    return found


def back_up_site(site: Site) -> Job:
    """Start a manual backup (SiteNotActive unless ACTIVE, SiteBusy while a job holds the site)."""
    _require_backups()
    _require_active(site, "backed up")
    with transaction.atomic():
        return _open(site, Site.JobType.BACKUP, params={"kind": Backup.Kind.MANUAL})


def restore_site(site: Site, key: object) -> Job:
    """Start restoring one of the site's backups into it (a before-restore backup is taken first)."""
    _require_backups()
    backup = find_backup(site.name, key)
    if backup.site_id != site.pk:
        raise Backup.DoesNotExist(f"site {site.name} has no backup {backup.key}")
    _require_active(site, "restored")
    with transaction.atomic():
        return _open(site, Site.JobType.RESTORE, params={"backup": backup.key})


def clone_site(name: str, new_name: object, key: object = None) -> Site:
    """A new site built from a backup of ``name`` (its latest when ``key`` is None), under its own URL.

    ``name`` may be a deleted site's: its final backup undoes the delete.
    """
    _require_backups()
    backups = site_backups(name)
    backup = backups.order_by("-created_at").first() if key is None else find_backup(name, key)
    if backup is None:
        raise Backup.DoesNotExist(f"site {name} has no backup yet")
    new_name = validate_site_name(new_name)
    if Site.objects.filter(name=new_name).exists():
        raise SiteNameTaken(new_name)
    check_capacity()  # a clone is a new site like any other
    source = Site.objects.filter(name=name).first()
    profile: dict[str, object] = {
        "title": backup.title or new_name,
        "admin_user": backup.admin_user,
        "admin_email": source.admin_email if source is not None else settings.WPFLEET_DEFAULT_ADMIN_EMAIL,
    }
    if source is not None:
        # As the site it comes from serves (a deleted site's: the defaults).
        profile.update(
            disk_quota=source.disk_quota,
            php_settings=dict(source.php_settings or {}),
            page_cache=source.page_cache,
        )
        if source.php_version in settings.WPFLEET_PHP_VERSIONS:
            profile["php_version"] = source.php_version
    try:
        with transaction.atomic():
            site = Site.objects.create(name=new_name, domain=SiteNames(new_name).domain, **profile)
            _open(site, Site.JobType.PROVISION, params={"backup": backup.key})
    except IntegrityError:
        raise SiteNameTaken(new_name) from None
    site.refresh_from_db()
    return site


def _require_active(site: Site, doing: str) -> None:
    site.refresh_from_db()
    if site.status != Site.Status.ACTIVE:
        raise SiteNotActive(f"site {site.name} is {site.get_status_display().lower()}: only an active site is {doing}")


# --- a site's settings and its page cache -----------------------------------------------

# What a settings job may change (sites.provisioning.handlers.ChangeSettings).
SETTINGS = ("page_cache", "php_version", "php", "disk_quota")


class QuotaTooSmall(ValueError):
    """A disk quota below what the site's files use now."""


def change_settings(site: Site, values: dict[str, object]) -> Job | None:
    """Start a job that serves the site with ``values`` (validated), or None when nothing changes.

    ValueError (a clear message) for an unknown setting or a bad value;
    SiteNotActive unless the site is ACTIVE; SiteBusy while a job holds it.
    """
    unknown = sorted(str(key) for key in values if key not in SETTINGS)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)} (allowed: {', '.join(SETTINGS)})")
    wanted: dict[str, object] = {}
    try:
        if "page_cache" in values:
            if not isinstance(values["page_cache"], bool):
                raise ValueError("page_cache must be true or false")
            wanted["page_cache"] = values["page_cache"]
        if "php_version" in values:
            wanted["php_version"] = validate_php_version(values["php_version"])
        if "php" in values:
            wanted["php"] = validate_php_settings(values["php"], site.php_settings or {})
        if "disk_quota" in values:
            wanted["disk_quota"] = validate_disk_quota(values["disk_quota"])
    except DjangoValidationError as error:
        raise ValueError(" ".join(error.messages)) from None
    _require_active(site, "changed")
    current = {"php": site.php_settings or {}}
    changed = {key: value for key, value in wanted.items() if current.get(key, getattr(site, key, None)) != value}
    quota = changed.get("disk_quota")
    if isinstance(quota, int):
        used = _disk_used(site)
        if used is not None and quota < used:
            raise QuotaTooSmall(f"disk_quota {human(quota)} is less than the {human(used)} the site's files use now")
    if not changed:
        return None
    with transaction.atomic():
        return _open(site, Site.JobType.SETTINGS, params=changed)


def _disk_used(site: Site) -> int | None:
    """What the site's files use: asked now where this process can, else as last collected."""
    if settings.WPFLEET_QUOTA_ROOT:
        from sites.infra.errors import InfraError
        from sites.infra.quota import DiskQuotas

        try:
            return DiskQuotas(settings.WPFLEET_QUOTA_ROOT).usage(site.name)[0]
        except (InfraError, OSError):
            pass
    return site.usage_disk


# --- suspend and resume -------------------------------------------------------------------


def suspend_site(site: Site) -> Job:
    """Start suspending the site: Caddy answers 503, its containers stop (SiteNotActive unless ACTIVE)."""
    _require_active(site, "suspended")
    with transaction.atomic():
        return _open(site, Site.JobType.SUSPEND)


def resume_site(site: Site) -> Job:
    """Start serving a suspended site again (SiteNotActive unless SUSPENDED)."""
    site.refresh_from_db()
    if site.status != Site.Status.SUSPENDED:
        raise SiteNotActive(f"site {site.name} is {site.get_status_display().lower()}: only a suspended site resumes")
    with transaction.atomic():
        return _open(site, Site.JobType.RESUME)


def purge_cache(site: Site) -> Job:
    """Start a job that deletes every page of the site's page cache (SiteNotActive unless ACTIVE)."""
    _require_active(site, "purged")
    with transaction.atomic():
        return _open(site, Site.JobType.PURGE_CACHE)
