"""Backups: taking them, restoring them, scheduling them and keeping the repository tidy.

A backup is two restic snapshots taken side by side, tagged with the
backup's key: the site's files (the archive API's tar of its webroot) and
its database (mariadb-dump in one transaction), each streamed from its
source into restic. Its catalogue row (sites.models.Backup) becomes DONE
only after both are stored; anything else is never listed, and the daily
maintenance forgets the snapshots of failed attempts.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sqlite3
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from jobs.models import Job
from jobs.queue import enqueue
from sites.infra.errors import InfraError
from sites.infra.restic import BackupRepository, Stored
from sites.models import Backup, Site, SiteBusy
from sites.models.naming import SiteNames
from sites.provisioning.restore import WEBROOT, Restorer, Source, database_path, files_path
from sites.provisioning.steps import (
    Context,
    Infra,
    LiveCheckStep,
    WordPressProfile,
    install_plugins,
    purge_page_cache,
)

if TYPE_CHECKING:
    from docker.models.containers import Container

log = logging.getLogger("wpfleet.backups")

# Job types of the backups queue that are not about one site.
PANEL_BACKUP = "PANEL_BACKUP"
MAINTENANCE = "BACKUP_MAINTENANCE"
BACKUP_QUEUE_TYPES = (Site.JobType.BACKUP, Site.JobType.RESTORE, PANEL_BACKUP, MAINTENANCE)

Record = Callable[..., object]


def enabled() -> bool:
    return bool(settings.WPFLEET_BACKUP_REPOSITORY)


@contextmanager
def recorded(record: Record, name: str) -> Iterator[None]:
    """One step of a backup job, recorded like a provisioning step."""
    handle = record(name, "apply", "RUNNING", "")
    try:
        yield
    except Exception as exc:
        record(name, "apply", "FAILED", str(exc), handle=handle)
        raise
    record(name, "apply", "OK", "", handle=handle)


def _tags(site: str, key: str, kind: str) -> dict[str, str]:
    return {"wpfleet": settings.WPFLEET_OWNER, "site": site, "backup": key, "kind": kind}


# --- taking a backup --------------------------------------------------------------------


def take_backup(site: Site, kind: str, job: Job | None, infra: Infra | None = None) -> Backup:
    """Back the site up now; the DONE row, or an InfraError (the row is then FAILED)."""
    infra = infra or Infra()
    names = site.names
    options = infra.db.wordpress_options(names.database, ("home", "blogname"))
    if "home" not in options:
        raise InfraError("backup", f"site {site.name} has no installed WordPress to back up")
    now = timezone.now()
    if job is not None:
        # An attempt before this one died mid-way: its backup is no backup.
        Backup.objects.filter(job=job, status=Backup.Status.RUNNING).update(
            status=Backup.Status.FAILED, error="interrupted: its worker died", finished_at=now
        )
    keep_until = now + dt.timedelta(days=settings.WPFLEET_BACKUP_KEEP_DELETED_DAYS)
    backup = Backup.objects.create(
        site=site,
        site_name=site.name,
        kind=kind,
        job=job,
        home_url=options["home"].rstrip("/"),
        title=options.get("blogname", site.title),
        admin_user=site.admin_user,
        keep_until=keep_until if kind == Backup.Kind.BEFORE_DELETE else None,
        created_at=now,
    )
    previous = Backup.objects.good().filter(site=site).exclude(fingerprint="").order_by("-created_at").first()
    try:
        files, database, digest = store(
            site.name, backup.key, kind, infra, previous, crash_drill=job is not None and _crash_drilled(job)
        )
    except Exception as exc:
        Backup.objects.filter(pk=backup.pk).update(
            status=Backup.Status.FAILED, error=str(exc)[:2000], finished_at=timezone.now()
        )
        raise
    # Only a row still RUNNING: one that a takeover marked FAILED meanwhile stays failed.
    Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(
        status=Backup.Status.DONE,
        files_snapshot=files.snapshot,
        database_snapshot=database.snapshot,
        size_bytes=files.total_bytes + database.total_bytes,
        added_bytes=files.added_bytes + database.added_bytes,
        files_bytes=files.total_bytes,
        fingerprint=digest,
        finished_at=timezone.now(),
    )
    backup.refresh_from_db()
    log.info("backup %s of %s: %s bytes, %s added", backup.key, site.name, backup.size_bytes, backup.added_bytes)
    return backup


# The crash drill of a backup: the worker kills itself (SIGKILL) once this
# many bytes of the site's files went into restic. restic has read them (the
# pipe holds 64 KiB), so it is in the middle of its backup, holding its lock
# in the repository.
CRASH_DRILL_BYTES = 4 << 20


def _crash_drilled(job: Job) -> bool:
    """Whether WPFLEET_CRASH_DURING names "backup" ("backup@1": attempt 1 only) for this attempt.

    A test's drill, empty in production: the worker then dies while restic
    stores the site's files, the backup's row and the job's step both
    RUNNING and committed, as an OOM kill or a power cut would leave them.
    """
    drills = settings.WPFLEET_CRASH_DURING
    return "backup" in drills or f"backup@{job.attempts}" in drills


def _crash_now() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


# Every entry of the webroot: path, size, mtime and ctime (which no process
# can set back), type, mode and owner, in a stable order. The same digest:
# the same files, as restic's own change detection would judge them.
FINGERPRINT = "find /var/www/html -printf '%P\\0%s\\0%T@\\0%C@\\0%y\\0%m\\0%U\\0%G\\n' | LC_ALL=C sort | sha256sum"


def fingerprint(infra: Infra, php: Container) -> str:
    """A digest of the site's files as they are now (a listing, not their content).

    Empty when the site's PHP is not running (stopped, or not yet started
    again after the engine restarted): the listing needs an exec, while the
    archive API reads a stopped container's files, so the backup reads them
    all rather than fail. A site is worth backing up most when it is down.
    """
    if php.status != "running":
        return ""
    code, output = infra.docker.exec(php, ["sh", "-c", FINGERPRINT])
    digest = output.split()[0] if code == 0 and output else ""
    if len(digest) != 64:
        raise InfraError("backup", f"listing the files of {php.name} failed: {output[-300:] or code}")
    return digest


def store(
    site: str,
    key: str,
    kind: str,
    infra: Infra,
    previous: Backup | None = None,
    crash_drill: bool = False,
) -> tuple[Stored, Stored, str]:
    """Stream the site's files and database into the repository, side by side.

    The files are read only when they changed since ``previous`` (its
    fingerprint): otherwise this backup's files are that backup's snapshot.
    Returns the two parts and the files' fingerprint. ``crash_drill``: kill
    the worker once CRASH_DRILL_BYTES of the files went into restic.
    """
    names = SiteNames(site)
    repository = infra.repository
    tags = _tags(site, key, kind)
    php = infra.docker.container(names.php)
    if php is None:
        raise InfraError("backup", f"{names.php} is missing: the site's files cannot be read")
    digest = fingerprint(infra, php)
    unchanged = bool(digest) and previous is not None and previous.fingerprint == digest and previous.files_snapshot

    dump = infra.db.dump_process(names.database)
    assert dump.stdout is not None
    database_in = repository.popen(_backup_args(database_path(site), tags), stdin=dump.stdout)
    dump.stdout.close()  # restic holds it now

    if unchanged:
        assert previous is not None
        database = repository.finish_backup(database_in, "storing the database")
        infra.db.finish(dump, "dumping the database")
        return Stored(previous.files_snapshot, previous.files_bytes, 0), database, digest

    files_in = repository.popen(_backup_args(files_path(site), tags), stdin=subprocess.PIPE)
    feed_error: list[BaseException] = []

    def feed() -> None:
        assert files_in.stdin is not None
        fed = 0
        try:
            for chunk in infra.docker.archive(names.php, WEBROOT):
                files_in.stdin.write(chunk)
                fed += len(chunk)
                if crash_drill and fed >= CRASH_DRILL_BYTES:
                    _crash_now()
        except BaseException as exc:  # told to the calling thread
            feed_error.append(exc)
        finally:
            try:
                files_in.stdin.close()
            except OSError:
                pass

    # (the database streams meanwhile: dump and restic are processes of their own)
    feed()
    # Wait for all three, then say why it failed: the repository first (a
    # restic that could not open it breaks the dump's pipe too).
    outcomes: list[Stored | BaseException | None] = []
    for finish in (
        lambda: repository.finish_backup(files_in, "storing the files"),
        lambda: repository.finish_backup(database_in, "storing the database"),
        lambda: infra.db.finish(dump, "dumping the database"),
    ):
        try:
            outcomes.append(finish())
        except Exception as exc:
            outcomes.append(exc)
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if feed_error:
        # restic stored what it got: a tar that ended early is no backup.
        error = feed_error[0]
        errors.append(error if isinstance(error, InfraError) else InfraError("backup", f"reading the files: {error}"))
    if errors:
        raise errors[0]
    stored_files, stored_database = outcomes[0], outcomes[1]
    assert isinstance(stored_files, Stored) and isinstance(stored_database, Stored)
    return stored_files, stored_database, digest


def _backup_args(filename: str, tags: dict[str, str]) -> list[str]:
    args = ["backup", "--stdin", "--stdin-filename", filename, "--json", "--host", "wpfleet"]
    for key, value in tags.items():
        args += ["--tag", f"{key}={value}"]
    return args


# --- restoring --------------------------------------------------------------------------


def source_of(backup: Backup) -> Source:
    return Source(
        site=backup.site_name,
        files_snapshot=backup.files_snapshot,
        database_snapshot=backup.database_snapshot,
        home_url=backup.home_url,
    )


def restore_site(site: Site, backup: Backup, job: Job, record: Record, infra: Infra | None = None) -> None:
    """Put the backup back into the live site: a before-restore backup first, the copy built beside, then switched.

    Until the switch the site serves as it was; a failure after it (the
    restored WordPress does not answer) switches back.
    """
    infra = infra or Infra()
    if not Backup.objects.filter(job=job, kind=Backup.Kind.BEFORE_RESTORE, status=Backup.Status.DONE).exists():
        with recorded(record, "backup"):
            take_backup(site, Backup.Kind.BEFORE_RESTORE, job, infra)
    restorer = Restorer(site.name, infra.docker, infra.db, infra.repository)
    quotas = infra.quotas
    if quotas is not None:
        # The backup's files are staged beside the live ones, inside the
        # site's quota directory: room for both while the restore runs.
        quotas.ensure(site.name, site.disk_quota + max(backup.files_bytes, 0) + 64 * 1024**2)
    try:
        _restore(site, backup, job, record, infra, restorer)
    finally:
        if quotas is not None:
            # Back to the site's quota (set as recorded: the restored files fit it when they were backed up).
            quotas.ensure(site.name, site.disk_quota)


def _restore(site: Site, backup: Backup, job: Job, record: Record, infra: Infra, restorer: Restorer) -> None:
    if restorer.leftovers():
        # A restore that died (this job's earlier attempt, or an earlier job)
        # may have left the site switched, its previous copy aside: put that
        # back first, so that this one starts from the site as it was.
        with recorded(record, "switch_back"):
            restorer.switch_back()
    with recorded(record, "stage"):
        try:
            restorer.stage(source_of(backup), site.url.rstrip("/"))
        except Exception:
            restorer.discard_staging()
            raise
    with recorded(record, "switch"):
        try:
            restorer.switch()
        except Exception:
            restorer.switch_back()
            raise
    ctx = Context(
        site=site.name,
        db_password=site.db_password,
        infra=infra,
        profile=WordPressProfile(title=backup.title, admin_user=site.admin_user, admin_email=site.admin_email),
        hostnames=site.hostnames(desired=False),
        home=site.home_host(desired=False),
        page_cache=site.page_cache,
        php_version=site.php_version,
        php_values=site.php_values,
        disk_quota=site.disk_quota,
    )
    try:
        with recorded(record, "wordpress"):
            install_plugins(infra.docker, site.names)
            # Pages cached from the site as it was must not outlive it.
            purge_page_cache(infra.docker, site.names)
        with recorded(record, "live_check"):
            LiveCheckStep().apply(ctx)
    except Exception:
        with recorded(record, "switch_back"):
            restorer.switch_back()
        try:
            purge_page_cache(infra.docker, site.names)
        except InfraError as exc:  # the restore's own error is the one to report
            log.warning("site %s: page cache not purged after switching back: %s", site.name, exc)
        raise
    with recorded(record, "discard"):
        restorer.discard_old()
        restorer.discard_staging()
    if backup.title and backup.title != site.title:
        Site.objects.filter(pk=site.pk).update(title=backup.title)


# --- the panel's own control database ----------------------------------------------------------


def backup_panel(infra: Infra | None = None) -> Stored:
    """Stream the control database into the repository (tag panel=<owner>)."""
    repository = (infra or Infra()).repository
    tags = {"wpfleet": settings.WPFLEET_OWNER, "panel": settings.WPFLEET_OWNER}
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        process = repository.popen(_backup_args("/panel/control.sql", tags), stdin=subprocess.PIPE)
        assert process.stdin is not None
        # iterdump reads inside one transaction: a consistent copy, written as SQL.
        source = sqlite3.connect(f"file:{db['NAME']}?mode=ro", uri=True, isolation_level=None)
        try:
            source.execute("BEGIN")  # one read transaction: every table as of one moment
            for line in source.iterdump():
                process.stdin.write((line + "\n").encode())
        finally:
            source.close()
            process.stdin.close()
        return repository.finish_backup(process, "storing the control database")
    from sites.infra.mariadb import MariaDBAdmin

    admin = MariaDBAdmin(
        {
            "host": db["HOST"] or "127.0.0.1",
            "port": int(db["PORT"] or 3306),
            "user": db["USER"],
            "password": db["PASSWORD"],
            "connect_timeout": 10,
        }
    )
    dump = admin.dump_process(db["NAME"])
    assert dump.stdout is not None
    process = repository.popen(_backup_args("/panel/control.sql", tags), stdin=dump.stdout)
    dump.stdout.close()
    stored = repository.finish_backup(process, "storing the control database")
    admin.finish(dump, "dumping the control database")
    return stored


# --- schedules --------------------------------------------------------------------------------


def next_slot(site: str, after: dt.datetime) -> dt.datetime:
    """The site's next backup time after ``after``: its own offset within each period, from its name."""
    period = int(settings.WPFLEET_BACKUP_EVERY_HOURS * 3600)
    offset = zlib.crc32(site.encode()) % period
    seconds = int(after.timestamp())
    slot = seconds - (seconds % period) + offset
    if slot <= seconds:
        slot += period
    return dt.datetime.fromtimestamp(slot, tz=dt.UTC)


def retry_scheduled(site: Site) -> None:
    """A failed scheduled backup is due again in WPFLEET_BACKUP_RETRY_MINUTES (unless due sooner)."""
    due = timezone.now() + dt.timedelta(minutes=settings.WPFLEET_BACKUP_RETRY_MINUTES)
    Site.objects.filter(pk=site.pk, backup_due_at__gt=due).update(backup_due_at=due)


def open_backup_queue_jobs() -> int:
    return Job.objects.filter(type__in=BACKUP_QUEUE_TYPES, status__in=Job.OPEN).count()


def schedule_backups() -> dict[str, Any]:
    """Housekeeping (every minute): start the backups that are due, within the backup workers' budget."""
    if not enabled():
        return {}
    now = timezone.now()
    report: dict[str, Any] = {}
    if settings.WPFLEET_BACKUP_EVERY_HOURS:
        unplanned = Site.objects.filter(status=Site.Status.ACTIVE, backup_due_at__isnull=True)
        for pk, name in unplanned.values_list("pk", "name")[:1000]:
            Site.objects.filter(pk=pk, backup_due_at__isnull=True).update(backup_due_at=next_slot(name, now))
        # More than the workers can take would only wait in the queue, ahead
        # of a manual backup or a restore; none while the maintenance needs
        # the repository's exclusive lock.
        free = settings.WPFLEET_BACKUP_WORKERS - open_backup_queue_jobs()
        if Job.objects.filter(type=MAINTENANCE, status__in=Job.OPEN).exists():
            free = 0
        started = []
        due = Site.objects.filter(status=Site.Status.ACTIVE, current_job__isnull=True, backup_due_at__lte=now).order_by(
            "backup_due_at"
        )
        for site in due[: max(free, 0)]:
            try:
                with transaction.atomic():
                    job = site.open_job(Site.JobType.BACKUP, params={"kind": Backup.Kind.SCHEDULED})
                    Site.objects.filter(pk=site.pk).update(backup_due_at=next_slot(site.name, now))
                    transaction.on_commit(functools.partial(enqueue, job.pk, job_type=job.type))
                started.append(site.name)
            except SiteBusy:
                continue
        if started:
            report["backups started"] = started
    if settings.WPFLEET_PANEL_BACKUP_EVERY_HOURS and _due(
        PANEL_BACKUP, dt.timedelta(hours=settings.WPFLEET_PANEL_BACKUP_EVERY_HOURS)
    ):
        report["panel backup"] = _open_plain_job(PANEL_BACKUP, "wpfleet panel")
    if settings.WPFLEET_BACKUP_MAINTENANCE_EVERY_HOURS and _due(
        MAINTENANCE, dt.timedelta(hours=settings.WPFLEET_BACKUP_MAINTENANCE_EVERY_HOURS)
    ):
        report["repository maintenance"] = _open_plain_job(MAINTENANCE, "backup repository")
    return report


def _due(job_type: str, every: dt.timedelta) -> bool:
    jobs = Job.objects.filter(type=job_type)
    if jobs.filter(status__in=Job.OPEN).exists():
        return False
    return not jobs.filter(created_at__gt=timezone.now() - every).exists()


def _open_plain_job(job_type: str, name: str) -> int:
    """A job about no site (the panel's backup, the repository's maintenance)."""
    job = Job.objects.create(subject_name=name, type=job_type, max_attempts=settings.WPFLEET_MAX_ATTEMPTS)
    transaction.on_commit(lambda: enqueue(job.pk, job_type=job_type))
    return job.pk


# --- retention and the repository's maintenance ---------------------------------------------


def _buckets(when: dt.datetime) -> dict[str, object]:
    iso = when.isocalendar()
    return {"daily": when.date(), "weekly": (iso.year, iso.week), "monthly": (when.year, when.month)}


def retained(backups: list[Backup], now: dt.datetime) -> set[int]:
    """The DONE backups the policy keeps (restic's keep-daily/weekly/monthly, per site).

    A site's newest backup is always kept. A deleted site keeps only its
    final backups, until their ``keep_until``.
    """
    keep: set[int] = set()
    groups: dict[tuple[object, str], list[Backup]] = {}
    for backup in backups:
        groups.setdefault((backup.site_id, backup.site_name), []).append(backup)
    counts = {
        "daily": settings.WPFLEET_BACKUP_KEEP_DAILY,
        "weekly": settings.WPFLEET_BACKUP_KEEP_WEEKLY,
        "monthly": settings.WPFLEET_BACKUP_KEEP_MONTHLY,
    }
    for (site_id, _), group in groups.items():
        group.sort(key=lambda b: b.created_at, reverse=True)
        for backup in group:
            if backup.keep_until is not None and backup.keep_until > now:
                keep.add(backup.pk)
        if site_id is None:
            continue  # deleted: only what keep_until holds
        keep.add(group[0].pk)
        for period, count in counts.items():
            seen: set[object] = set()
            for backup in group:
                bucket = _buckets(backup.created_at)[period]
                if bucket in seen:
                    continue
                if len(seen) >= count:
                    break
                seen.add(bucket)
                keep.add(backup.pk)
    return keep


def maintain(record: Record, repository: BackupRepository | None = None) -> dict[str, int]:
    """Apply retention, forget the snapshots the catalogue no longer needs, prune; off the hot path (the backups queue)."""
    repository = repository or BackupRepository()
    now = timezone.now()
    with recorded(record, "wait"):
        # forget and prune need the exclusive lock: let the running backups
        # and restores end first (the scheduler starts none meanwhile).
        deadline = time.monotonic() + settings.WPFLEET_BACKUP_TIMEOUT_SECONDS
        busy = Job.objects.filter(type__in=BACKUP_QUEUE_TYPES, status=Job.Status.PROCESSING).exclude(type=MAINTENANCE)
        while busy.exists() and time.monotonic() < deadline:
            time.sleep(2)
    with recorded(record, "unlock"):
        repository.unlock()  # stale locks of restic processes that died
    done = list(Backup.objects.good())
    keep = retained(done, now)
    dropped = [backup for backup in done if backup.pk not in keep]
    with recorded(record, "forget"):
        # A backup whose job ended without finishing it (its worker died on the last attempt).
        Backup.objects.filter(status=Backup.Status.RUNNING).exclude(job__status__in=Job.OPEN).update(
            status=Backup.Status.FAILED, error="interrupted: its worker died", finished_at=now
        )
        # Only snapshots the catalogue says are not needed: a policy's drop,
        # a failed attempt. One whose key the catalogue does not know is kept
        # (a control database restored from an older copy does not know the
        # newest backups: they are not garbage).
        unwanted = {backup.key for backup in dropped} | set(
            Backup.objects.filter(status=Backup.Status.FAILED).values_list("key", flat=True)
        )
        # A dropped backup's files may be another's snapshot (tagged with that
        # one's key, which may be gone from the catalogue already).
        dropped_snapshots = {
            snapshot for backup in dropped for snapshot in (backup.files_snapshot, backup.database_snapshot) if snapshot
        }
        # A kept backup may refer to the files snapshot of an older one (its files had not changed).
        referenced = {
            snapshot
            for backup in done
            if backup.pk in keep
            for snapshot in (backup.files_snapshot, backup.database_snapshot)
        }
        snapshots = repository.snapshots({"wpfleet": settings.WPFLEET_OWNER})
        forget = []
        for snapshot in snapshots:
            tags = dict(tag.split("=", 1) for tag in snapshot.get("tags") or [] if "=" in tag)
            ids = {snapshot["id"], snapshot.get("short_id")}
            if (tags.get("backup") in unwanted or ids & dropped_snapshots) and not ids & referenced:
                forget.append(snapshot["id"])
        for start in range(0, len(forget), 200):
            repository.forget(forget[start : start + 200])
        # The panel's own backups: restic's policy on their one group.
        repository.run(
            [
                "forget",
                "--tag",
                f"panel={settings.WPFLEET_OWNER}",
                "--keep-daily",
                str(settings.WPFLEET_BACKUP_KEEP_DAILY),
                "--keep-weekly",
                str(settings.WPFLEET_BACKUP_KEEP_WEEKLY),
                "--keep-monthly",
                str(settings.WPFLEET_BACKUP_KEEP_MONTHLY),
            ],
            "forgetting old panel backups",
            timeout=600,
        )
        Backup.objects.filter(pk__in=[backup.pk for backup in dropped]).delete()
        # Failed attempts stay listed for a while in the admin, for their error.
        Backup.objects.filter(status=Backup.Status.FAILED, created_at__lt=now - dt.timedelta(days=30)).delete()
    with recorded(record, "prune"):
        repository.prune()
    return {"forgotten": len(forget), "dropped": len(dropped)}


# --- health ----------------------------------------------------------------------------


def check_repository() -> None:
    """For /api/health: the repository opens with the password (an InfraError says why not)."""
    BackupRepository().ping()
