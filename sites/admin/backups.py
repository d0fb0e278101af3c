"""Backups in the operators' console: a read-only catalogue of every backup row.

Backups are taken, restored and cloned from their site's page (sites.admin.sites),
through sites.services; this list also shows the failed ones and those of
deleted sites, which the site pages cannot.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from sites.admin import presenters as views
from sites.models import Backup
from sites.permissions import can


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    list_display = ["key", "site_link", "kind", "status_badge", "created_at", "size", "error_short"]
    list_display_links = ["key"]
    list_filter = ["kind", "status"]
    search_fields = ["site_name"]
    list_per_page = 50
    readonly_fields = [
        "key",
        "site_link",
        "kind",
        "status_badge",
        "job_link",
        "created_at",
        "finished_at",
        "duration_display",
        "size",
        "added",
        "keep_until",
        "home_url",
        "title",
        "admin_user",
        "files_snapshot",
        "database_snapshot",
        "error",
    ]

    class Media:
        css = {"all": ["wpfleet/admin.css"]}

    # --- read-only: rows are written by the backup jobs alone -----------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        # Backups go by the retention policy, never by hand: a row deleted here
        # would orphan its snapshots, and a deleted site's final backup is its only way back.
        return False

    def has_view_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        return can(request.user, "list_backups")

    def get_fieldsets(self, request: HttpRequest, obj: Backup | None = None):
        return [(None, {"fields": list(self.readonly_fields)})]

    # --- columns -------------------------------------------------------------------

    @admin.display(description="site", ordering="site_name")
    def site_link(self, backup: Backup) -> str:
        if backup.site_id is None:
            return format_html('{} <span class="wpf-muted">(deleted)</span>', backup.site_name)
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:sites_site_change", args=[backup.site_id]), backup.site_name
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, backup: Backup) -> str:
        return views.badge(backup.get_status_display(), backup.status.lower())

    @admin.display(description="job")
    def job_link(self, backup: Backup) -> str:
        if backup.job_id is None:
            return "—"
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:jobs_job_change", args=[backup.job_id]), backup.job_id
        )

    @admin.display(description="duration")
    def duration_display(self, backup: Backup) -> str:
        return views.format_duration(backup.duration)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, backup: Backup) -> str:
        return filesizeformat(backup.size_bytes)

    @admin.display(description="added to the repository", ordering="added_bytes")
    def added(self, backup: Backup) -> str:
        return filesizeformat(backup.added_bytes)

    @admin.display(description="error")
    def error_short(self, backup: Backup) -> str:
        if not backup.error:
            return ""
        return format_html(
            '<span class="wpf-error" title="{}">{}</span>', backup.error, views.truncate(backup.error, 80)
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Backups", **(extra_context or {})})
