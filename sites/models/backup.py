"""Backups of sites: the catalogue of what the repository holds (sites.infra.restic).

A row is made RUNNING when a backup starts and becomes DONE only once both
of its parts (the files and the database, one restic snapshot each) are
stored and checked; a backup that fails or whose worker dies is FAILED and
never listed. The repository's snapshots carry the row's ``key`` as a tag,
so that the maintenance job can forget what a failed attempt stored.

Rows outlive their site (``site`` is set to NULL, ``site_name`` stays): a
deleted site's final backup can still be cloned into a new site.
"""

from __future__ import annotations

import datetime as dt
import secrets

from django.db import models
from django.utils import timezone

from jobs.models import Job
from sites.models.site import Site


def _new_key() -> str:
    return secrets.token_hex(8)


class BackupQuerySet(models.QuerySet):
    def good(self) -> BackupQuerySet:
        return self.filter(status=Backup.Status.DONE)

    def of_site_named(self, name: str, site: Site | None) -> BackupQuerySet:
        """The backups a caller reaches under ``/sites/<name>/``: the site's own, or a deleted site's of that name."""
        if site is not None:
            return self.filter(site=site)
        return self.filter(site__isnull=True, site_name=name)


class Backup(models.Model):
    class Kind(models.TextChoices):
        MANUAL = "manual", "Manual"
        SCHEDULED = "scheduled", "Scheduled"
        BEFORE_RESTORE = "before-restore", "Before a restore"
        BEFORE_DELETE = "before-delete", "Before deletion"

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        DONE = "DONE", "Done"
        FAILED = "FAILED", "Failed"

    objects = BackupQuerySet.as_manager()

    # The id the API and the admin show, and the tag of its snapshots.
    key = models.CharField(max_length=16, unique=True, default=_new_key, editable=False)
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    site_name = models.CharField(max_length=32, db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING, db_index=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # restic's snapshot ids of the two parts.
    files_snapshot = models.CharField(max_length=64, blank=True)
    database_snapshot = models.CharField(max_length=64, blank=True)
    # What restic read, and what it had to add (the rest was there already).
    size_bytes = models.BigIntegerField(default=0)
    added_bytes = models.BigIntegerField(default=0)
    # The files part: its size, and a digest of every file's path, size,
    # mtime and ctime (sites.ops.backups.fingerprint). A later backup that
    # finds the same digest refers to the same files snapshot instead of
    # reading the site again; the maintenance keeps a snapshot while a kept
    # backup refers to it.
    files_bytes = models.BigIntegerField(default=0)
    fingerprint = models.CharField(max_length=64, blank=True)
    # The site as it was, for a restore or a clone: the URL its WordPress
    # called home (rewritten on the way back when it differs), its title and admin.
    home_url = models.CharField(max_length=300, blank=True)
    title = models.CharField(max_length=200, blank=True)
    admin_user = models.CharField(max_length=60, blank=True)
    # A final backup is kept until then, whatever the retention policy says.
    keep_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["site_name", "status", "created_at"])]

    def __str__(self) -> str:
        return f"{self.site_name} {self.key}"

    @property
    def duration(self) -> dt.timedelta | None:
        return None if self.finished_at is None else self.finished_at - self.created_at
