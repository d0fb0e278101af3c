"""Backups in the operators' console: a read-only catalogue of every backup row.

Backups are taken, restored and cloned from their site's page (sites.admin.sites),
through sites.services; this list also shows the failed ones and those of
deleted sites, which the site pages cannot, and clones a deleted site's
backup (the way back from a delete).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from sites.admin import presenters as views
from sites.models import Backup
from sites.permissions import can
from sites.services import BackupsDisabled, CapacityExhausted, SiteNameTaken, clone_site


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    list_display = ["key", "site_link", "kind", "status_badge", "created_at", "size", "error_short", "way_back"]
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

    @admin.display(description="")
    def way_back(self, backup: Backup) -> str:
        """A deleted site's good backup can be cloned, under its old name or another."""
        if backup.site_id is not None or backup.status != Backup.Status.DONE:
            return ""
        return format_html(
            '<a class="button" href="{}">Clone to…</a>', reverse("admin:sites_backup_clone", args=[backup.pk])
        )

    def get_urls(self):
        return [
            path("<int:pk>/clone/", self.admin_site.admin_view(self.clone_view), name="sites_backup_clone"),
            *super().get_urls(),
        ]

    def clone_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """A new site from a deleted site's backup: its name (GET), then the clone (POST)."""
        from sites.admin.sites import CloneForm  # the site page's form: the same messages

        if not can(request.user, "clone_site"):
            raise PermissionDenied
        backup = get_object_or_404(Backup.objects.good(), pk=pk, site__isnull=True)
        changelist = reverse("admin:sites_backup_changelist")
        form = CloneForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                clone = clone_site(backup.site_name, form.cleaned_data["name"], backup.key)
            except ValidationError as exc:
                form.add_error("name", exc)
            except SiteNameTaken as exc:
                form.add_error("name", str(exc))
            except (BackupsDisabled, Backup.DoesNotExist, CapacityExhausted) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return HttpResponseRedirect(changelist)
            else:
                self.log_addition(
                    request, clone, f"Cloned from backup {backup.key} of the deleted site {backup.site_name}."
                )
                self.message_user(
                    request,
                    f"The site “{clone.name}” is being built from the backup of {backup.site_name} "
                    f"({views.backup_taken_at(backup)}, job #{clone.current_job_id}).",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:sites_site_change", args=[clone.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Clone the deleted site {backup.site_name}’s backup into a new site",
            "subtitle": None,
            "opts": self.opts,
            "backup": backup,
            "form": form,
            "changelist": changelist,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "wpfleet/clone_deleted_backup.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Backups", **(extra_context or {})})
