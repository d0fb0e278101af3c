"""What the jobs of a site do, registered with the generic job runner (jobs.registry)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction

from jobs import registry
from jobs.models import Job
from sites.infra.errors import InfraError
from sites.models import Backup, Domain, Site, known_secrets
from sites.models.php import effective_php_settings, human
from sites.ops import backups as backup_ops
from sites.provisioning import php_switch
from sites.provisioning.orchestrator import Provisioner, no_record
from sites.provisioning.restore import Restorer, Source
from sites.provisioning.steps import (
    Context,
    Infra,
    WordPressProfile,
    purge_page_cache,
    step_named,
    stop_site_containers,
)

log = logging.getLogger("wpfleet.jobs")


class SiteGone(InfraError):
    permanent = True

    def __init__(self, name: str):
        super().__init__("site", f"the site {name} no longer exists")


def wordpress_profile(site: Site) -> WordPressProfile:
    return WordPressProfile(title=site.title or site.name, admin_user=site.admin_user, admin_email=site.admin_email)


def _site(job: Job) -> Site | None:
    return Site.objects.filter(pk=job.subject_id).first() if job.subject_id else None


def _clone_source(job: Job) -> Source | None:
    """A clone's PROVISION job names the backup it is built from."""
    key = job.params.get("backup") if job.params else None
    if not key:
        return None
    backup = Backup.objects.good().filter(key=key).first()
    if backup is None:
        raise BackupGone(key)
    return backup_ops.source_of(backup)


class BackupGone(InfraError):
    permanent = True

    def __init__(self, key: str):
        super().__init__("backup", f"backup {key} no longer exists")


def follow_installed_title(site: Site, infra: Infra | None = None) -> None:
    """Take the title the site's WordPress has now (its owner may have renamed the blog).

    The live check proves that each hostname reaches this site's WordPress
    by the name its REST index gives: the one WordPress stores, which the
    panel's copy must match.
    """
    stored = (infra or Infra()).db.wordpress_options(site.names.database, ("blogname",)).get("blogname")
    if stored and stored != site.title:
        Site.objects.filter(pk=site.pk).update(title=stored)
        site.title = stored


def _provisioner(
    site: Site, job: Job, record: registry.Recorder, *, desired: bool = True, restore: Source | None = None
) -> Provisioner:
    return Provisioner(
        site.name,
        site.db_password,
        recorder=record,
        attempt=job.attempts,
        profile=wordpress_profile(site),
        hostnames=site.hostnames(desired=desired),
        home=site.home_host(desired=desired),
        restore=restore,
        page_cache=site.page_cache,
        php_version=site.php_version,
        php_values=site.php_values,
        disk_quota=site.disk_quota,
    )


def site_context(site: Site, infra: Infra, *, desired: bool = False, db_password: str | None = None) -> Context:
    """The site as its steps see it: as served now (``desired=False``) or as requested."""
    return Context(
        site=site.name,
        db_password=site.db_password if db_password is None else db_password,
        infra=infra,
        profile=wordpress_profile(site),
        hostnames=site.hostnames(desired=desired),
        home=site.home_host(desired=desired),
        page_cache=site.page_cache,
        php_version=site.php_version,
        php_values=site.php_values,
        disk_quota=site.disk_quota,
        backend_network=site.backend_network,
        applied=dict(site.applied or {}),
    )


class _SiteJob:
    label = ""
    queue = "default"

    def secrets(self, job: Job) -> list[str]:
        site = _site(job)
        return site.secrets() if site is not None else known_secrets()

    def on_final_failure(self, job: Job) -> None:
        site = _site(job)
        if site is not None:
            site.release(job)


class Provision(_SiteJob):
    label = "Provision"

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        _provisioner(site, job, record, restore=_clone_source(job)).provision()

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is not None:
            # Everything any attempt may have built, in reverse; ours only.
            _provisioner(site, job, record).deprovision()

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        site.mark_active()
        site.release(job)


class Deprovision(_SiteJob):
    """Take the final backup (when the site was live), then remove everything of the site."""

    label = "Deprovision"

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            return  # already gone: nothing left to remove
        if job.params.get("final_backup") and not self._backed_up(job):
            # Nothing is removed before the site's data is safe.
            with backup_ops.recorded(record, "final_backup"):
                # (a suspended site's files are read from its stopped PHP: nothing starts)
                backup_ops.take_backup(site, Backup.Kind.BEFORE_DELETE, job)
        _provisioner(site, job, record).deprovision()

    @staticmethod
    def _backed_up(job: Job) -> bool:
        return Backup.objects.filter(job=job, kind=Backup.Kind.BEFORE_DELETE, status=Backup.Status.DONE).exists()

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        """Deprovisioning is itself the undo: the site stays a zombie for the cleanup."""

    def on_final_failure(self, job: Job) -> None:
        site = _site(job)
        if site is None:
            return
        if job.params.get("final_backup") and not self._backed_up(job) and not job.steps.filter(phase="undo").exists():
            # The final backup failed, so nothing was removed: the site serves on (or stays suspended).
            site.cancel_deprovision(suspended=bool(job.params.get("suspended")))
        site.release(job)

    def on_done(self, job: Job) -> None:
        # The name is free again; the job keeps subject_name for history.
        if job.subject_id is not None:
            Site.objects.filter(pk=job.subject_id).delete()


class ChangeDomains(_SiteJob):
    """Make the site answer to its requested domains and call its primary one home.

    The Domain rows say what is requested (ADDING, REMOVING, ``primary``);
    ``Site.home_domain`` and the ACTIVE and REMOVING rows say what is served.
    A failed attempt goes back to what was served; a job that fails for good
    also puts the rows back.
    """

    label = "Change domains"

    def _served(self, site: Site, provisioner: Provisioner) -> Context:
        return site_context(site, provisioner.ctx.infra)

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        follow_installed_title(site)
        provisioner = _provisioner(site, job, record)
        docker = provisioner.ctx.infra.docker
        # Cached pages name the site's URLs: the new ones now, or the old ones again.
        try:
            provisioner.change_hostnames(previous=self._served(site, provisioner))
        except Exception:
            try:
                purge_page_cache(docker, site.names)
            except InfraError as exc:
                log.warning("job %s: page cache of %s not purged after the rollback: %s", job.pk, site.name, exc)
            raise
        purge_page_cache(docker, site.names)

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is not None:
            provisioner = _provisioner(site, job, record)
            provisioner.restore_hostnames(self._served(site, provisioner))

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        with transaction.atomic():
            home = site.home_host(desired=True)
            site.domains.filter(state=Domain.State.REMOVING).delete()
            site.domains.filter(state=Domain.State.ADDING).update(state=Domain.State.ACTIVE)
            Site.objects.filter(pk=site.pk).update(home_domain="" if home == site.domain else home)
            site.release(job)

    def on_final_failure(self, job: Job) -> None:
        site = _site(job)
        if site is not None:
            # Each failed attempt went back already; again here, in case that
            # restore failed too (the engine was down): no nginx may keep
            # answering for a domain that is about to be free for another site.
            provisioner = _provisioner(site, job, no_record)
            errors = provisioner.restore_hostnames(self._served(site, provisioner))
            if errors:
                log.warning("job %s: %s still not back to its previous domains: %s", job.pk, site.name, errors)
            with transaction.atomic():
                site.domains.filter(state=Domain.State.ADDING).delete()
                site.domains.filter(state=Domain.State.REMOVING).update(state=Domain.State.ACTIVE)
                site.domains.update(primary=False)
                site.domains.filter(name=site.home_domain).update(primary=True)
                site.release(job)


class BackUp(_SiteJob):
    label = "Back up"
    queue = "backups"

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        with backup_ops.recorded(record, "backup"):
            backup_ops.take_backup(site, job.params.get("kind", Backup.Kind.MANUAL), job)

    def on_final_failure(self, job: Job) -> None:
        site = _site(job)
        if site is not None and job.params.get("kind") == Backup.Kind.SCHEDULED:
            backup_ops.retry_scheduled(site)
        super().on_final_failure(job)

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        """A backup builds nothing in the site; its unfinished snapshots go with the maintenance."""
        Backup.objects.filter(job=job, status=Backup.Status.RUNNING).update(
            status=Backup.Status.FAILED, error="interrupted: its worker died"
        )

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is not None:
            site.release(job)


class Restore(_SiteJob):
    label = "Restore"
    queue = "backups"

    def _backup(self, job: Job, site: Site) -> Backup:
        backup = Backup.objects.good().filter(key=job.params.get("backup"), site=site).first()
        if backup is None:
            raise BackupGone(str(job.params.get("backup")))
        return backup

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        backup_ops.restore_site(site, self._backup(job, site), job, record)

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        """The worker died mid-restore: whatever was switched goes back, and the copies beside go."""
        site = _site(job)
        if site is not None:
            infra = Infra()
            Restorer(site.name, infra.docker, infra.db, infra.repository).switch_back()

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is not None:
            site.release(job)


class ChangeSettings(_SiteJob):
    """Serve the site with the settings the job names (``params``), then record them on the site.

    - ``disk_quota``: the quota of its files is set (sites.infra.quota);
      refused, for good, below what the files use.
    - ``php_version``, ``php``: a new PHP container, blue/green
      (sites.provisioning.php_switch); the site serves throughout.
    - ``page_cache``: nginx's server block is rewritten and reloaded.
    The cache is purged after a change of PHP or of the page cache (pages
    kept from before the cache was turned off must not come back). A failed
    attempt goes back to the site's recorded settings.
    """

    label = "Change settings"

    @staticmethod
    def wanted(site: Site, job: Job, infra: Infra) -> Context:
        ctx = site_context(site, infra)
        params = job.params
        ctx.page_cache = bool(params.get("page_cache", site.page_cache))
        ctx.php_version = str(params.get("php_version", site.php_version))
        if "php" in params:
            ctx.php_values = effective_php_settings(params["php"])
        return ctx

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        infra = Infra()
        ctx, previous = self.wanted(site, job, infra), site_context(site, infra)
        params = job.params
        quotas = infra.quotas
        if "disk_quota" in params and quotas is not None:
            with _recorded(record, "disk_quota", f"quota {human(int(params['disk_quota']))}"):
                quotas.set_limit(site.name, int(params["disk_quota"]))
        try:
            if "php_version" in params or "php" in params:
                php_switch.switch_php(ctx, previous, record)
            elif "page_cache" in params:
                with _recorded(record, "nginx_config", f"page cache {'on' if ctx.page_cache else 'off'}"):
                    step_named("nginx_config").apply(ctx)
        except Exception:
            self.abandon(job, record)
            raise
        if "php_version" in params or "php" in params:
            try:
                purge_page_cache(infra.docker, site.names)
            except InfraError as exc:
                # The new PHP serves already: a purge that failed is no reason to switch back.
                log.warning("job %s: page cache of %s not purged after its change: %s", job.pk, site.name, exc)
        elif "page_cache" in params:
            try:
                # Pages kept from before the cache was turned off must not come back.
                purge_page_cache(infra.docker, site.names)
            except Exception:
                self.abandon(job, record)
                raise

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            return
        infra = Infra()
        previous = site_context(site, infra)
        params = job.params
        if "php_version" in params or "php" in params:
            php_switch.roll_back(previous, self.wanted(site, job, infra), record)
        elif "page_cache" in params:
            handle = record("nginx_config", "undo", "RUNNING", "")
            try:
                step_named("nginx_config").apply(previous)
            except Exception as error:
                record("nginx_config", "undo", "UNDO_FAILED", str(error), handle=handle)
            else:
                record("nginx_config", "undo", "UNDONE", "as recorded", handle=handle)
        quotas = infra.quotas
        if "disk_quota" in params and quotas is not None:
            handle = record("disk_quota", "undo", "RUNNING", "")
            try:
                # As recorded, even below what the site now uses (set_limit would refuse).
                quotas.ensure(site.name, site.disk_quota)
            except Exception as error:
                record("disk_quota", "undo", "UNDO_FAILED", str(error), handle=handle)
            else:
                record("disk_quota", "undo", "UNDONE", f"quota {human(site.disk_quota)}", handle=handle)

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        fields = {key: job.params[key] for key in ("page_cache", "php_version", "disk_quota") if key in job.params}
        if "php" in job.params:
            fields["php_settings"] = job.params["php"]
        with transaction.atomic():
            if fields:
                Site.objects.filter(pk=site.pk).update(**fields)
            site.release(job)


@contextmanager
def _recorded(record: registry.Recorder, step: str, done: str) -> Iterator[None]:
    handle = record(step, "apply", "RUNNING", "")
    try:
        yield
    except Exception as error:
        record(step, "apply", "FAILED", str(error), handle=handle)
        raise
    record(step, "apply", "OK", done, handle=handle)


class Suspend(_SiteJob):
    """Caddy answers the site's hostnames with a 503 page, then its containers stop (their memory is freed).

    Its files, database, routes and settings stay. A failure starts the
    containers again and serves the site.
    """

    label = "Suspend"

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        ctx = site_context(site, Infra())
        try:
            with _recorded(record, "route", "answers 503 (suspended)"):
                for host in ctx.served:
                    ctx.infra.caddy.suspend(site.name, host)
            with _recorded(record, "containers", "stopped"):
                stop_site_containers(ctx)
        except Exception:
            self.abandon(job, record)
            raise

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is not None and site.status == Site.Status.ACTIVE:
            _serve(site_context(site, Infra()), record, phase="undo")

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        with transaction.atomic():
            site.mark_suspended()
            site.release(job)


def _serve(ctx: Context, record: registry.Recorder, *, phase: str) -> None:
    """Start the site's containers (nginx loads its server block), route it unsuspended, check it live.

    Its database account first: the reconciler passes over ACTIVE sites only,
    and a site suspended while WPFLEET_DB_USER_HOST changed has its account
    at the former pattern until then.
    """
    names = ("database", "nginx", "php", "nginx_config", "route", "live_check")
    for step in map(step_named, names):
        handle = record(step.name, phase, "RUNNING", "")
        try:
            step.apply(ctx)
        except Exception as error:
            record(step.name, phase, "FAILED" if phase == "apply" else "UNDO_FAILED", str(error), handle=handle)
            raise
        record(step.name, phase, "OK" if phase == "apply" else "UNDONE", "", handle=handle)


class Resume(_SiteJob):
    """Start the suspended site's containers, serve its hostnames again, and verify it live.

    A failure suspends it again: its page says so rather than an error.
    """

    label = "Resume"

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        try:
            _serve(site_context(site, Infra()), record, phase="apply")
        except Exception:
            # Not left half served: the site stays SUSPENDED, so it must answer as suspended.
            self.abandon(job, record)
            raise

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            return
        ctx = site_context(site, Infra())
        handle = record("route", "undo", "RUNNING", "")
        try:
            for host in ctx.served:
                ctx.infra.caddy.suspend(site.name, host)
            stop_site_containers(ctx)
        except Exception as error:
            record("route", "undo", "UNDO_FAILED", str(error), handle=handle)
            return
        record("route", "undo", "UNDONE", "suspended again", handle=handle)

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        with transaction.atomic():
            site.mark_resumed()
            site.release(job)


class PurgeCache(_SiteJob):
    label = "Purge page cache"

    def run(self, job: Job, record: registry.Recorder) -> None:
        site = _site(job)
        if site is None:
            raise SiteGone(job.subject_name)
        handle = record("purge_cache", "apply", "RUNNING", "")
        try:
            purge_page_cache(Infra().docker, site.names)
        except Exception as error:
            record("purge_cache", "apply", "FAILED", str(error), handle=handle)
            raise
        record("purge_cache", "apply", "OK", "", handle=handle)

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        """A purge builds nothing."""

    def on_done(self, job: Job) -> None:
        site = _site(job)
        if site is not None:
            site.release(job)


class _PlainJob:
    """A job about no site: the panel's backup, the repository's maintenance."""

    label = ""
    queue = "backups"

    def secrets(self, job: Job) -> list[str]:
        return known_secrets()

    def abandon(self, job: Job, record: registry.Recorder) -> None:
        """Nothing of its own to undo."""

    def on_done(self, job: Job) -> None:
        """Nothing to release."""

    def on_final_failure(self, job: Job) -> None:
        """Nothing to release."""


class PanelBackup(_PlainJob):
    label = "Back up the panel"

    def run(self, job: Job, record: registry.Recorder) -> None:
        with backup_ops.recorded(record, "backup"):
            backup_ops.backup_panel()


class Maintenance(_PlainJob):
    label = "Repository maintenance"

    def run(self, job: Job, record: registry.Recorder) -> None:
        backup_ops.maintain(record)


def register() -> None:
    registry.register(Site.JobType.PROVISION, Provision())
    registry.register(Site.JobType.DEPROVISION, Deprovision())
    registry.register(Site.JobType.DOMAINS, ChangeDomains())
    registry.register(Site.JobType.BACKUP, BackUp())
    registry.register(Site.JobType.RESTORE, Restore())
    registry.register(Site.JobType.SETTINGS, ChangeSettings())
    registry.register(Site.JobType.PURGE_CACHE, PurgeCache())
    registry.register(Site.JobType.SUSPEND, Suspend())
    registry.register(Site.JobType.RESUME, Resume())
    registry.register(backup_ops.PANEL_BACKUP, PanelBackup())
    registry.register(backup_ops.MAINTENANCE, Maintenance())
