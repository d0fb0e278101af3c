"""Jobs in the operators' console: a read-only record of what the workers did.

Jobs are written only by the services and the workers; here they can be read
and a final failure retried (as a fresh job, through sites.services).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html

from jobs.models import Job
from sites.admin import presenters as views
from sites.models import Site
from sites.permissions import can
from sites.services import SiteBusy, retry_site


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "type",
        "site_link",
        "status_badge",
        "attempts_display",
        "duration_display",
        "error_short",
        "created_at",
    ]
    list_display_links = ["id"]
    list_filter = ["type", "status"]
    search_fields = ["subject_name"]
    list_per_page = 50
    actions = ["retry_jobs"]
    change_form_template = "admin/jobs/job/change_form.html"
    readonly_fields = [
        "site_link",
        "type",
        "status_badge",
        "attempts_display",
        "created_at",
        "started_at",
        "finished_at",
        "duration_display",
        "next_attempt_at",
        "worker",
        "lease_expires_at",
        "error",
        "traceback_text",
    ]

    class Media:
        css = {"all": ["wpfleet/admin.css"]}
        js = ["wpfleet/live.js"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The site of each row in one query, not one per row.
        return super().get_queryset(request).prefetch_related("subject")

    # --- read-only: jobs are the workers' record ------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return can(request.user, "view_job")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "retry_site")

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None):
        fields = [name for name in self.readonly_fields if name != "traceback_text"]
        fieldsets: list[tuple[str | None, dict[str, list[str]]]] = [(None, {"fields": fields})]
        # The traceback names code paths and hosts; operators get the error line.
        if request.user.is_superuser:
            fieldsets.append(("Traceback", {"fields": ["traceback_text"], "classes": ["collapse"]}))
        return fieldsets

    # --- columns -------------------------------------------------------------------

    @admin.display(description="site", ordering="subject_name")
    def site_link(self, job: Job) -> str:
        if job.subject is None:
            return format_html('{} <span class="wpf-muted">(deleted)</span>', job.subject_name)
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:sites_site_change", args=[job.subject_id]), job.subject_name
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> str:
        return views.job_status_badge(job)

    @admin.display(description="attempts", ordering="attempts")
    def attempts_display(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> str:
        return views.format_duration(job.duration)

    @admin.display(description="error")
    def error_short(self, job: Job) -> str:
        if not job.error:
            return ""
        return format_html('<span class="wpf-error" title="{}">{}</span>', job.error, views.truncate(job.error, 80))

    @admin.display(description="traceback")
    def traceback_text(self, job: Job) -> str:
        if not job.traceback:
            return "—"
        return format_html('<pre class="wpf-traceback">{}</pre>', job.traceback)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Jobs", **(extra_context or {})})

    # --- the job's page: timeline, live progress -----------------------------------------

    def get_urls(self):
        progress = path(
            "<path:object_id>/progress/",
            self.admin_site.admin_view(self.progress_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_progress",
        )
        return [progress, *super().get_urls()]

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        job = self.get_object(request, unquote(object_id))
        if job is None:
            return JsonResponse({"gone": True}, status=404)
        if not self.has_view_or_change_permission(request, job):
            raise PermissionDenied
        return JsonResponse(views.job_progress(job))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        job = self.get_object(request, unquote(object_id))
        if job is not None and self.has_view_or_change_permission(request, job):
            progress = views.job_progress(job)
            context["wpfleet_panels"] = [("Steps", views.render_timeline(job))]
            if progress["open"]:
                context["wpfleet_live"] = {
                    "url": reverse("admin:jobs_job_progress", args=[job.pk]),
                    "fingerprint": progress["fingerprint"],
                    "gone_url": reverse("admin:jobs_job_changelist"),
                }
        return super().change_view(request, object_id, form_url, context)

    # --- actions ---------------------------------------------------------------------

    @admin.action(description="Retry the selected failed jobs", permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        tally = views.Tally()
        sites = {
            site.pk: site
            for site in Site.objects.filter(pk__in=queryset.values("subject_id")).select_related("last_job")
        }
        for job in queryset.order_by("id"):
            label = f"#{job.pk} {job.subject_name}"
            if job.status != Job.Status.FAILED:
                tally.skip(label, "not failed for good")
                continue
            site = sites.get(job.subject_id)
            if site is None:
                tally.skip(label, "site deleted")
                continue
            # retry_site runs the site's latest job again: an older failure was
            # already superseded by a newer job.
            if site.last_job_id != job.pk:
                tally.skip(label, "superseded by a newer job")
                continue
            try:
                retry_site(site)
            except SiteBusy:
                tally.skip(label, "site has a job in progress")
                continue
            tally.done.append(label)
        views.report(self, request, tally, "job", "queued for retry")
