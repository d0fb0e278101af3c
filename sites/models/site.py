from __future__ import annotations

import datetime as dt
import secrets

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone

from jobs.models import InvalidTransition, Job
from sites.models.fields import EncryptedTextField
from sites.models.naming import SiteNames

# A repair that has not finished after this long died with its worker.
REPAIR_LEASE = dt.timedelta(minutes=5)


class SiteBusy(Exception):
    """Another job of the site is open (pending, running, or waiting to retry), or the reconciler is repairing it."""


class SiteQuerySet(models.QuerySet):
    def zombies(self) -> SiteQuerySet:
        """Sites stuck for good: building or being deleted, no job holding them, their last job FAILED.

        ``Site.is_zombie`` is the same test on one row in memory.
        """
        return self.filter(status__in=ZOMBIE_STATUSES, current_job__isnull=True, last_job__status=Job.Status.FAILED)


def _new_db_password() -> str:
    return secrets.token_urlsafe(24)


def _default_php_version() -> str:
    return settings.WPFLEET_PHP_DEFAULT_VERSION


def _default_disk_quota() -> int:
    return settings.WPFLEET_DISK_QUOTA


def _new_admin_user() -> str:
    # Not "admin": a login name an attacker has to guess too.
    return "wp-" + secrets.token_hex(5)


class Site(models.Model):
    """A WordPress site; its resources are described by sites.provisioning.steps."""

    class Status(models.TextChoices):
        PROVISIONING = "PROVISIONING", "Provisioning"
        ACTIVE = "ACTIVE", "Active"
        # Containers stopped, Caddy answers 503; data, database and routes kept.
        SUSPENDED = "SUSPENDED", "Suspended"
        DEPROVISIONING = "DEPROVISIONING", "Deprovisioning"

    class JobType(models.TextChoices):
        PROVISION = "PROVISION", "Provision"
        DEPROVISION = "DEPROVISION", "Deprovision"
        DOMAINS = "DOMAINS", "Change domains"
        BACKUP = "BACKUP", "Back up"
        RESTORE = "RESTORE", "Restore"
        SETTINGS = "SETTINGS", "Change settings"
        PURGE_CACHE = "PURGE_CACHE", "Purge page cache"
        SUSPEND = "SUSPEND", "Suspend"
        RESUME = "RESUME", "Resume"

    objects = SiteQuerySet.as_manager()

    name = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROVISIONING, db_index=True)
    domain = models.CharField(max_length=255)
    # WordPress as installed at creation (sites.provisioning.steps.WordPressStep).
    # The admin's password is generated inside WordPress and never known to
    # the panel; operators log in with a one-time link or rotate it.
    title = models.CharField(max_length=200, default="")
    admin_user = models.CharField(max_length=60, default=_new_admin_user)
    admin_email = models.EmailField(max_length=254, default="")
    # The hostname WordPress's home and siteurl use now (empty: ``domain``);
    # changed only by a domains job that succeeded (sites.models.Domain).
    home_domain = models.CharField(max_length=253, blank=True, default="", editable=False)
    # nginx's page cache for anonymous visitors (sites.provisioning.templates);
    # changed only by a settings job that succeeded.
    page_cache = models.BooleanField(default=True, editable=False)
    # PHP as served now (a settings job changes them, blue/green:
    # sites.provisioning.php_switch): the version (WPFLEET_PHP_VERSIONS) and
    # the php.ini values the site set (the others: sites.models.php.PHP_DEFAULTS).
    php_version = models.CharField(max_length=8, default=_default_php_version, editable=False)
    php_settings = models.JSONField(default=dict, blank=True, editable=False)
    # Bytes the site's files may take (sites.infra.quota; WPFLEET_DISK_QUOTA).
    disk_quota = models.BigIntegerField(default=_default_disk_quota, editable=False)
    # Usage as last read in bulk by the worker (sites.ops.usage); None: not read yet.
    usage_memory = models.BigIntegerField(null=True, blank=True, editable=False)
    usage_cpu = models.FloatField(null=True, blank=True, editable=False)  # % of one CPU over the last interval
    usage_disk = models.BigIntegerField(null=True, blank=True, editable=False)
    usage_requests = models.IntegerField(null=True, blank=True, editable=False)  # in the last hour
    usage_at = models.DateTimeField(null=True, blank=True, editable=False)
    # WordPress cron, run by the worker (sites.ops.cron): when next due, the
    # last run, and failures in a row (WPFLEET_CRON_MAX_FAILURES flags the site).
    cron_due_at = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    cron_ran_at = models.DateTimeField(null=True, blank=True, editable=False)
    cron_failures = models.PositiveIntegerField(default=0, editable=False)
    cron_error = models.TextField(blank=True, editable=False)
    # Random per site, never derived from the name; never shown anywhere;
    # stored encrypted (sites.models.fields), never queried.
    db_password = EncryptedTextField(default=_new_db_password, editable=False)
    # The job that holds the site (open: pending, processing or waiting to
    # retry). Set and cleared with conditional UPDATEs: at most one job per
    # site runs at a time.
    current_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    # The newest job of any status, so lists show it without a query per row.
    last_job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    # The last drift the reconciler found and repaired (kept as a record), and
    # whether its latest check found any.
    drift = models.TextField(blank=True, editable=False)
    drifted = models.BooleanField(default=False, editable=False, db_index=True)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The backend network (a shard: sites.provisioning.shards) on which Caddy
    # reaches the site's nginx; empty: WPFLEET_BACKEND_NETWORK (sites made
    # before shards, and new sites until their nginx step picks one).
    backend_network = models.CharField(max_length=128, blank=True, default="", editable=False)
    # Fingerprints of what the site's nginx was last given ({step: sha256
    # prefix}: its aliases on the backend network, its server block). The
    # reconciler compares them with what should be, so a pass needs no read
    # inside each container (sites.provisioning.steps).
    applied = models.JSONField(default=dict, blank=True, editable=False)
    # Set while the reconciler repairs the site: no job may open meanwhile, so
    # a repair never rebuilds what a concurrent deprovision just removed.
    repairing_since = models.DateTimeField(null=True, blank=True, editable=False)
    # When the site's next scheduled backup is due (sites.ops.backups.schedule_backups):
    # each site at its own time of day, so that backups spread over the day.
    backup_due_at = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Never filtered, ordered or searched on, in the admin or anywhere else.
    secret_fields = frozenset({"db_password"})

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def names(self) -> SiteNames:
        return SiteNames(self.name)

    @property
    def url(self) -> str:
        # Caddy serves every site over HTTPS (plain HTTP redirects there).
        return f"https://{self.home_domain or self.domain}/"

    def hostnames(self, *, desired: bool) -> tuple[str, ...]:
        """Every hostname the site answers to, its own first: as requested (desired) or as served now."""
        if self.pk is None:
            return (self.domain,)
        states = ("ACTIVE", "ADDING") if desired else ("ACTIVE", "REMOVING")
        prefetched = getattr(self, "_prefetched_objects_cache", {}).get("domains")
        if prefetched is not None:
            # A pass over many sites (the reconciler) read every domain in one query.
            return (self.domain, *sorted(d.name for d in prefetched if d.state in states))
        extra = self.domains.filter(state__in=states).order_by("name").values_list("name", flat=True)
        return (self.domain, *extra)

    def home_host(self, *, desired: bool) -> str:
        """The hostname WordPress calls home: the primary domain requested, or the one it has now."""
        if not desired or self.pk is None:
            return self.home_domain or self.domain
        primary = self.domains.filter(primary=True).exclude(state="REMOVING").values_list("name", flat=True).first()
        return primary or self.domain

    @property
    def is_zombie(self) -> bool:
        """sites.ops.cleanup.zombie_sites() for one row in memory: stuck, its last job failed for good."""
        job = self.last_job
        return (
            self.status in ZOMBIE_STATUSES
            and self.current_job_id is None
            and job is not None
            and job.status == job.Status.FAILED
        )

    @property
    def jobs(self) -> models.QuerySet[Job]:
        """The site's jobs. (Not a GenericRelation: deleting the site would delete its job history.)"""
        return Job.objects.filter(subject_type=ContentType.objects.get_for_model(Site), subject_id=self.pk)

    def secrets(self) -> list[str]:
        """Every secret text that could reach an error about this site; redacted before display."""
        return known_secrets() + [self.db_password]

    # --- transitions: conditional UPDATEs, re-checked in the UPDATE itself ---------------

    def open_job(self, job_type: str, params: dict | None = None) -> Job:
        """Create a job of the site and make it the site's current one, in the caller's transaction.

        The conditional UPDATE is the lock: it fails (SiteBusy) if another job
        holds the site or the reconciler is repairing it. A deprovision moves
        the site to DEPROVISIONING in the same UPDATE.
        """
        job = Job.objects.create(
            subject=self,
            subject_name=self.name,
            type=job_type,
            params=params or {},
            max_attempts=settings.WPFLEET_MAX_ATTEMPTS,
        )
        fields: dict[str, object] = {"current_job": job, "last_job": job, "updated_at": timezone.now()}
        if job_type == self.JobType.DEPROVISION:
            fields["status"] = self.Status.DEPROVISIONING
        idle = Site.objects.filter(pk=self.pk, current_job__isnull=True).filter(
            Q(repairing_since__isnull=True) | Q(repairing_since__lt=timezone.now() - REPAIR_LEASE)
        )
        if idle.update(**fields) != 1:
            raise SiteBusy(f"site {self.name} already has a job in progress (or is being repaired)")
        self.current_job, self.last_job = job, job
        if "status" in fields:
            self.status = self.Status.DEPROVISIONING
        return job

    def release(self, job: Job) -> None:
        """The job no longer holds the site (it ended)."""
        Site.objects.filter(pk=self.pk, current_job=job).update(current_job=None, updated_at=timezone.now())
        self.current_job = None

    def mark_active(self) -> None:
        self._move((self.Status.PROVISIONING, self.Status.ACTIVE), self.Status.ACTIVE)

    def mark_suspended(self) -> None:
        self._move((self.Status.ACTIVE,), self.Status.SUSPENDED)

    def mark_resumed(self) -> None:
        self._move((self.Status.SUSPENDED,), self.Status.ACTIVE)

    @property
    def cron_flagged(self) -> bool:
        """Its cron failed WPFLEET_CRON_MAX_FAILURES times in a row: no longer run until cleared."""
        return self.cron_failures >= settings.WPFLEET_CRON_MAX_FAILURES

    @property
    def php_values(self) -> dict[str, str | int]:
        """Every php.ini value the site runs with (its own, then the defaults)."""
        from sites.models.php import effective_php_settings

        return effective_php_settings(self.php_settings or {})

    def cancel_deprovision(self, suspended: bool = False) -> None:
        """A delete whose final backup failed: nothing was removed, the site serves on (or stays suspended)."""
        self._move((self.Status.DEPROVISIONING,), self.Status.SUSPENDED if suspended else self.Status.ACTIVE)

    def _move(self, allowed: tuple[str, ...], target: str) -> None:
        if self.status not in allowed:
            raise InvalidTransition(f"site {self.name}: {self.status} -> {target} is not allowed")
        changed = Site.objects.filter(pk=self.pk, status__in=allowed).update(status=target, updated_at=timezone.now())
        if changed != 1:
            raise InvalidTransition(f"site {self.name}: status changed concurrently, {target} refused")
        self.status = target

    def claim_for_repair(self) -> bool:
        """Mark the site as being repaired, if it is ACTIVE and no job holds it."""
        return (
            Site.objects.filter(
                pk=self.pk, status=self.Status.ACTIVE, current_job__isnull=True, repairing_since__isnull=True
            ).update(repairing_since=timezone.now())
            == 1
        )

    def end_repair(self, **fields: object) -> None:
        Site.objects.filter(pk=self.pk).update(repairing_since=None, **fields)


ZOMBIE_STATUSES = (Site.Status.PROVISIONING, Site.Status.DEPROVISIONING)


def known_secrets() -> list[str]:
    """Secrets of the panel itself that must never be shown."""
    from django.db import connection

    control = str(connection.settings_dict.get("PASSWORD") or "")
    backups = [settings.WPFLEET_BACKUP_PASSWORD, settings.WPFLEET_BACKUP_S3_SECRET_ACCESS_KEY]
    return [str(settings.WPFLEET_DB_ADMIN["password"]), str(settings.SECRET_KEY), control] + [
        secret for secret in backups if secret
    ]


@receiver(pre_delete, sender=Site)
def _keep_job_history(sender: type[Site], instance: Site, **kwargs: object) -> None:
    # A deleted site's jobs stay, with its name; they no longer point at a row.
    instance.jobs.update(subject_id=None)
