"""The operators' console for sites: add one, watch it being built, act on it.

Everything that changes a site goes through sites.services (the API's code),
so the admin can never do what the API would refuse. Nothing here shows the
site's database password: it is in no form, field, column or log entry.
"""

from __future__ import annotations

import functools
import re

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import escape, format_html
from django.utils.http import url_has_allowed_host_and_scheme

from jobs.models import Job
from jobs.redaction import redact
from sites.admin import presenters as views
from sites.infra.errors import InfraError
from sites.models import Backup, Domain, Site, known_secrets
from sites.models.php import PHP_DEFAULTS, human
from sites.models.validation import (
    NAME_RULE,
    taken_message,
    validate_admin_email,
    validate_admin_user,
    validate_site_name,
    validate_title,
)
from sites.ops.capacity import check_capacity, host_capacity
from sites.ops.cleanup import cleanup, zombie_sites
from sites.permissions import can
from sites.services import (
    BackupsDisabled,
    CapacityExhausted,
    DomainTaken,
    SiteBusy,
    SiteNameTaken,
    SiteNotActive,
    WordPressUserMissing,
    add_domain,
    back_up_site,
    change_settings,
    clone_site,
    create_site,
    delete_site,
    find_backup,
    login_link,
    new_admin_password,
    purge_cache,
    remove_domain,
    restore_site,
    resume_site,
    retry_site,
    set_primary_domain,
    site_backups,
    suspend_site,
)

# What the services refuse a backup, restore or clone with: shown as an error
# on the site's page, and nothing was done.
_BACKUP_REFUSALS = (BackupsDisabled, Backup.DoesNotExist, SiteBusy, SiteNotActive)

# The logs a site's page reads (sites.ops.logs.SOURCES), and how many lines unless asked.
LOG_SOURCES = ("nginx", "php")
LOG_LINES_DEFAULT = 100


class SiteNameField(forms.Field):
    """Hands the submitted text to validate_site_name as it came: no stripping,
    no length or null-character checks of its own, so every message is the API's."""

    def to_python(self, value: object) -> object:
        return "" if value is None else value


class SiteAddForm(forms.ModelForm):
    name = SiteNameField(
        required=False,
        label="Name",
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off", "spellcheck": "false"}),
    )

    title = forms.CharField(required=False, label="Title", help_text="WordPress's site title; the name if empty.")
    admin_email = forms.CharField(
        required=False, label="Admin email", help_text="The WordPress admin's email; a default if empty."
    )
    admin_user = forms.CharField(
        required=False, label="Admin user", help_text="The WordPress admin's login; random if empty (never “admin”)."
    )

    class Meta:
        model = Site
        fields = ["name"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The admin renders help texts as HTML.
        self.fields["name"].help_text = escape(
            f"{NAME_RULE} A site named “blog” is served as blog.{settings.WPFLEET_BASE_DOMAIN}."
        )

    def clean_name(self) -> str:
        name = validate_site_name(self.cleaned_data.get("name"))
        if Site.objects.filter(name=name).exists():
            raise ValidationError(taken_message(name), code="taken")
        return name

    def clean_title(self) -> str | None:
        value = self.cleaned_data.get("title")
        return validate_title(value) if value else None

    def clean_admin_email(self) -> str | None:
        value = self.cleaned_data.get("admin_email")
        return validate_admin_email(value) if value else None

    def clean_admin_user(self) -> str | None:
        value = self.cleaned_data.get("admin_user")
        return validate_admin_user(value) if value else None

    def validate_unique(self) -> None:
        """create_site checks the name again under the unique constraint; the
        model's own "Site with this Name already exists." would differ from the API."""

    def clean(self) -> dict:
        # The API's 507 as a form error (create_site checks again, as for the name).
        cleaned = super().clean() or {}
        if not self.errors:
            try:
                check_capacity()
            except CapacityExhausted as exc:
                raise ValidationError(str(exc), code="capacity") from None
        return cleaned


class CloneForm(forms.Form):
    """Only carries the new name: clone_site checks it, so every message is the API's."""

    name = SiteNameField(
        required=False,
        label="New site's name",
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Rendered by wpfleet/clone_backup.html, which escapes it.
        example = f"A site named “blog” is served as blog.{settings.WPFLEET_BASE_DOMAIN}."
        self.fields["name"].help_text = f"{NAME_RULE} {example}"


class SettingsForm(forms.Form):
    """Text fields handed to change_settings as typed: it checks them, so every message is the API's.

    ``changes()`` is what differs from the site as it runs now: only that is sent.
    """

    def __init__(self, site: Site, *args, **kwargs) -> None:
        self.site = site
        kwargs["initial"] = self.current()
        super().__init__(*args, **kwargs)

    def current(self) -> dict[str, str]:
        raise NotImplementedError

    def changes(self) -> dict[str, object]:
        raise NotImplementedError

    def refuse(self, error: ValueError) -> None:
        """The service's message on the field it names (they start with the setting's name), else on the form."""
        message = str(error)
        for name in self.fields:
            if re.match(rf"{name}\b", message):
                self.add_error(name, message)
                return
        self.add_error(None, message)


def _size_field(label: str, help_text: str = "") -> forms.CharField:
    return forms.CharField(
        required=False,
        label=label,
        help_text=help_text,
        widget=forms.TextInput(attrs={"size": 8, "maxlength": 32, "autocomplete": "off", "spellcheck": "false"}),
    )


class PhpForm(SettingsForm):
    php_version = forms.CharField(required=False, label="PHP version", widget=forms.Select)
    memory_limit = _size_field("memory_limit")
    upload_max_filesize = _size_field("upload_max_filesize")
    post_max_size = _size_field("post_max_size", "At least upload_max_filesize: PHP drops a larger request whole.")
    max_execution_time = _size_field("max_execution_time")

    def __init__(self, site: Site, *args, **kwargs) -> None:
        super().__init__(site, *args, **kwargs)
        # A select of the versions offered; the service checks what comes back.
        self.fields["php_version"].widget.choices = [(v, f"PHP {v}") for v in settings.WPFLEET_PHP_VERSIONS]
        bounds = {
            "memory_limit": f"Like 256M or 1G: 64M to {human(settings.WPFLEET_PHP_MEMORY_LIMIT_MAX)}.",
            "upload_max_filesize": f"The largest file WordPress accepts: 1M to {human(settings.WPFLEET_PHP_UPLOAD_MAX)}.",
            "max_execution_time": f"Seconds a request may run: 1 to {settings.WPFLEET_PHP_EXECUTION_MAX_SECONDS}.",
        }
        for name, text in bounds.items():
            self.fields[name].help_text = text

    def current(self) -> dict[str, str]:
        return {"php_version": self.site.php_version, **{k: str(v) for k, v in self.site.php_values.items()}}

    def changes(self) -> dict[str, object]:
        # A field left out of the request (a script's partial POST) is left as it is.
        data, now = self.cleaned_data, self.current()
        values: dict[str, object] = {}
        if "php_version" in self.data and data["php_version"] != now["php_version"]:
            values["php_version"] = data["php_version"]
        php: dict[str, object] = {}
        for key in PHP_DEFAULTS:
            raw = data[key]
            if key not in self.data or raw == now[key]:
                continue
            # A whole number of seconds is a number for the service; anything else goes as typed, to be refused.
            php[key] = int(raw) if key == "max_execution_time" and re.fullmatch(r"[0-9]{1,9}", raw) else raw
        if php:
            values["php"] = php
        return values


class DiskQuotaForm(SettingsForm):
    disk_quota = _size_field("Disk quota")

    def __init__(self, site: Site, *args, **kwargs) -> None:
        super().__init__(site, *args, **kwargs)
        top = human(settings.WPFLEET_DISK_QUOTA_MAX)
        self.fields["disk_quota"].help_text = f"Like 5G or 512M: 256M to {top}, and no less than the site's files use."

    def current(self) -> dict[str, str]:
        return {"disk_quota": human(self.site.disk_quota)}

    def changes(self) -> dict[str, object]:
        raw = self.cleaned_data["disk_quota"]
        return {} if raw == self.current()["disk_quota"] else {"disk_quota": raw}


def _describe(values: dict[str, object], job: Job) -> str:
    """What a settings job changes, as it will run ("PHP 8.3, memory_limit 512M"), for messages and the log."""
    params = job.params or {}
    php = {**PHP_DEFAULTS, **(params.get("php") or {})}
    parts = []
    for key, value in values.items():
        if key == "php_version":
            parts.append(f"PHP {params.get(key, value)}")
        elif key == "php" and isinstance(value, dict):
            parts += [f"{name} {php.get(name, raw)}" for name, raw in value.items()]
        elif key == "disk_quota":
            quota = params.get(key)
            parts.append(f"disk quota {human(quota) if isinstance(quota, int) else value}")
        else:
            parts.append(f"{key} {params.get(key, value)}")
    return ", ".join(parts)


class ZombieFilter(admin.SimpleListFilter):
    title = "zombie"
    parameter_name = "zombie"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Zombies (last job failed for good)"), ("no", "Not zombies")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        # The cleanup's own definition, so the filter lists what it would remove.
        if self.value() == "yes":
            return queryset.filter(pk__in=zombie_sites().values("pk"))
        if self.value() == "no":
            return queryset.exclude(pk__in=zombie_sites().values("pk"))
        return queryset


class DriftFilter(admin.SimpleListFilter):
    title = "last check"
    parameter_name = "drifted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Found drift (repaired)"), ("no", "No drift")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(drifted=self.value() == "yes")
        return queryset


class CronFilter(admin.SimpleListFilter):
    title = "cron"
    parameter_name = "cron_flagged"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        failures = settings.WPFLEET_CRON_MAX_FAILURES
        return [("yes", f"Flagged ({failures} failures in a row)"), ("no", "Not flagged")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        # Site.cron_flagged, as a query.
        flagged = {"cron_failures__gte": settings.WPFLEET_CRON_MAX_FAILURES}
        if self.value() == "yes":
            return queryset.filter(**flagged)
        if self.value() == "no":
            return queryset.exclude(**flagged)
        return queryset


def _live_and_idle(site: Site) -> bool:
    """Whether the site can take a job that works on its WordPress now (no other job holds it)."""
    return site.status == Site.Status.ACTIVE and site.current_job_id is None


def _skip_unless(site: Site, status: str, otherwise: str) -> str:
    """Why an action that needs the site in ``status`` and idle skips it ("" when it does not)."""
    if site.status != status:
        return otherwise
    return "job in progress" if site.current_job_id else ""


def _safe_next(request: HttpRequest) -> HttpResponseRedirect | None:
    """Back to the page an action was started from (the site's page), if it is ours."""
    target = request.POST.get("_next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(target)
    return None


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    form = SiteAddForm
    list_display = [
        "name",
        "status_badge",
        "domain_link",
        "last_job_summary",
        "attempts",
        "php",
        "memory",
        "disk",
        "created_at",
    ]
    list_select_related = ["last_job"]
    list_filter = ["status", ZombieFilter, DriftFilter, CronFilter]
    search_fields = ["name"]
    list_per_page = 50
    actions = [
        "retry_failed_jobs",
        "purge_page_caches",
        "suspend_sites",
        "resume_sites",
        "clear_cron_flags",
        "deprovision_sites",
        "cleanup_zombies",
    ]
    readonly_fields = [
        "name",
        "status_badge",
        "domain_link",
        "title",
        "admin_user",
        "admin_email",
        "current_job_link",
        "created_at",
        "updated_at",
        "checked_at",
        "drift",
    ]
    change_form_template = "admin/sites/site/change_form.html"

    class Media:
        css = {"all": ["wpfleet/admin.css"]}
        js = ["wpfleet/live.js"]

    # --- permissions: the API's rule set (sites.permissions); changes go through
    # --- services, deletion through deprovisioning --------------------------------------

    def has_view_permission(self, request: HttpRequest, obj: Site | None = None) -> bool:
        return can(request.user, "view_site")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "create_site")

    def has_change_permission(self, request: HttpRequest, obj: Site | None = None) -> bool:
        # A site's page is a view: every field is the system's. The list keeps
        # the change permission for the actions (retry).
        if obj is not None:
            return False
        return can(request.user, "retry_site")

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "purge_cache")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "retry_site")

    def has_cleanup_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "cleanup_sites")

    def has_suspend_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "suspend_site")

    def has_resume_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "resume_site")

    def has_clear_cron_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "clear_cron_flag")

    def has_delete_permission(self, request: HttpRequest, obj: Site | None = None) -> bool:
        # A row deleted by the ORM would leave containers, database and route
        # running: deletion is the deprovision action, never the stock one.
        return False

    def has_deprovision_permission(self, request: HttpRequest) -> bool:
        return can(request.user, "delete_site")

    # --- the add form ----------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Site | None = None):
        if obj is None:
            return [(None, {"fields": ["name", "title", "admin_email", "admin_user"]})]
        return [
            (
                None,
                {
                    "fields": [
                        "name",
                        "status_badge",
                        "domain_link",
                        "title",
                        "admin_user",
                        "admin_email",
                        "current_job_link",
                        "checked_at",
                        "drift",
                    ]
                },
            ),
            ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
        ]

    def get_form(self, request: HttpRequest, obj: Site | None = None, change: bool = False, **kwargs):
        # The name form is for adding only; a site's page has nothing to edit.
        kwargs["form"] = SiteAddForm if obj is None else forms.ModelForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Site | None = None):
        return [] if obj is None else self.readonly_fields

    def save_form(self, request: HttpRequest, form: SiteAddForm, change: bool) -> Site:
        if change:
            return super().save_form(request, form, change)
        # The site and its PROVISION job are written by the service, in one
        # transaction, exactly as for the API; the job is queued on commit.
        data = form.cleaned_data
        return create_site(
            data["name"],
            title=data.get("title"),
            admin_email=data.get("admin_email"),
            admin_user=data.get("admin_user"),
        )

    def save_model(self, request: HttpRequest, obj: Site, form: SiteAddForm, change: bool) -> None:
        """Saved by create_site in save_form; nothing on a site is edited here."""

    def save_related(self, request: HttpRequest, form: SiteAddForm, formsets, change: bool) -> None:
        """A site has no related objects to save from a form."""

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        context = {"show_save_and_continue": False, **(extra_context or {})}
        try:
            return super().add_view(request, form_url, context)
        except (SiteNameTaken, CapacityExhausted) as exc:
            # Lost a race for the name, or for the last room, after the form's
            # check: same message as the API's 409 or 507.
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def response_add(self, request: HttpRequest, obj: Site, post_url_continue: str | None = None) -> HttpResponse:
        if IS_POPUP_VAR in request.POST or "_addanother" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        self.message_user(
            request, f"The site “{obj.name}” is being built; this page shows its job’s progress.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:sites_site_change", args=[obj.pk]))

    # --- columns -----------------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, site: Site) -> str:
        return views.site_status_badge(site)

    @admin.display(description="domain", ordering="domain")
    def domain_link(self, site: Site) -> str:
        if site.status != Site.Status.ACTIVE:
            return format_html('<span class="wpf-muted" title="not live">{}</span>', site.domain)
        return format_html(
            '<a class="wpf-domain" href="{}" target="_blank" rel="noopener noreferrer">{}</a>',
            site.url,
            site.domain,
        )

    @admin.display(description="latest job", ordering="last_job__status")
    def last_job_summary(self, site: Site) -> str:
        job = site.last_job
        if job is None:
            return "—"
        html = format_html('<a href="{}">{}</a> {}', views.job_url(job), job.type_label, views.job_status_badge(job))
        if job.error:
            html += format_html('<div class="wpf-error" title="{}">{}</div>', job.error, views.truncate(job.error, 70))
        return html

    @admin.display(description="attempts", ordering="last_job__attempts")
    def attempts(self, site: Site) -> str:
        job = site.last_job
        return "—" if job is None else f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="PHP", ordering="php_version")
    def php(self, site: Site) -> str:
        return site.php_version

    @admin.display(description="memory", ordering="usage_memory")
    def memory(self, site: Site) -> str:
        return views.size(site.usage_memory)

    @admin.display(description="disk", ordering="usage_disk")
    def disk(self, site: Site) -> str:
        used = views.percent(site.usage_disk, site.disk_quota)
        if used is not None and used >= 90:
            return format_html(
                '<span class="wpf-full" title="{} % of its quota">{}</span>', used, views.disk_usage(site)
            )
        return views.disk_usage(site)

    @admin.display(description="job holding the site")
    def current_job_link(self, site: Site) -> str:
        if site.current_job_id is None:
            return "none"
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:jobs_job_change", args=[site.current_job_id]), site.current_job_id
        )

    # --- the site's page: live resources, jobs, progress --------------------------------

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("progress/", self.admin_site.admin_view(self.list_progress_view), name=f"{prefix}_list_progress"),
            path(
                "<path:object_id>/progress/", self.admin_site.admin_view(self.progress_view), name=f"{prefix}_progress"
            ),
            path(
                "<path:object_id>/wordpress-login/",
                self.admin_site.admin_view(self.wordpress_login_view),
                name=f"{prefix}_wordpress_login",
            ),
            path(
                "<path:object_id>/domains/<str:operation>/",
                self.admin_site.admin_view(self.domains_view),
                name=f"{prefix}_domains",
            ),
            path(
                "<path:object_id>/admin-password/",
                self.admin_site.admin_view(self.admin_password_view),
                name=f"{prefix}_admin_password",
            ),
            path(
                "<path:object_id>/page-cache/<str:operation>/",
                self.admin_site.admin_view(self.page_cache_view),
                name=f"{prefix}_page_cache",
            ),
            path("<path:object_id>/suspend/", self.admin_site.admin_view(self.suspend_view), name=f"{prefix}_suspend"),
            path("<path:object_id>/resume/", self.admin_site.admin_view(self.resume_view), name=f"{prefix}_resume"),
            path("<path:object_id>/php/", self.admin_site.admin_view(self.php_view), name=f"{prefix}_php"),
            path(
                "<path:object_id>/disk-quota/",
                self.admin_site.admin_view(self.disk_quota_view),
                name=f"{prefix}_disk_quota",
            ),
            path("<path:object_id>/logs/", self.admin_site.admin_view(self.logs_view), name=f"{prefix}_logs"),
            path(
                "<path:object_id>/cron/clear-flag/",
                self.admin_site.admin_view(self.clear_cron_flag_view),
                name=f"{prefix}_clear_cron_flag",
            ),
            path(
                "<path:object_id>/backups/back-up/",
                self.admin_site.admin_view(self.back_up_view),
                name=f"{prefix}_back_up",
            ),
            path(
                "<path:object_id>/backups/<str:key>/restore/",
                self.admin_site.admin_view(self.restore_view),
                name=f"{prefix}_restore",
            ),
            path(
                "<path:object_id>/backups/<str:key>/clone/",
                self.admin_site.admin_view(self.clone_view),
                name=f"{prefix}_clone",
            ),
            *super().get_urls(),
        ]

    def list_progress_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        ids = [int(value) for value in request.GET.get("ids", "").split(",")[: self.list_per_page] if value.isdigit()]
        return JsonResponse(views.sites_progress(ids))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = super().changelist_view(request, {"title": "Sites", **(extra_context or {})})
        context = getattr(response, "context_data", None) or {}
        changelist = context.get("cl")
        if changelist is not None:
            ids = [site.pk for site in changelist.result_list]
            building = sum(1 for site in changelist.result_list if site.current_job_id is not None)
            if building:
                # Rendered lazily: the marker joins the context before the template runs.
                context["wpfleet_live"] = {
                    "url": reverse("admin:sites_site_list_progress") + "?ids=" + ",".join(map(str, ids)),
                    "fingerprint": views.sites_progress(ids)["fingerprint"],
                    "gone_url": request.get_full_path(),
                    "keep_selection": True,
                    "text": f"{views.plural(building, 'site')} on this page {'has' if building == 1 else 'have'} "
                    "a job running: this list updates itself.",
                }
        return response

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        site = self.get_object(request, unquote(object_id))
        if site is None:
            return JsonResponse({"gone": True}, status=404)
        if not self.has_view_or_change_permission(request, site):
            raise PermissionDenied
        return JsonResponse(views.site_progress(site))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        site = self.get_object(request, unquote(object_id))
        if site is not None and self.has_view_or_change_permission(request, site):
            progress = views.site_progress(site)
            panels = [
                ("Status", self._render_status(request, site)),
                ("Usage", self._render_usage(site)),
                ("Domains", self._render_domains(request, site)),
                ("Page cache", self._render_page_cache(request, site)),
                ("PHP", self._render_php(request, site)),
                ("Disk", self._render_disk(request, site)),
                ("Cron", self._render_cron(request, site)),
            ]
            if can(request.user, "view_logs"):
                panels.append(("Logs", self._render_logs_link(request, site)))
            if can(request.user, "list_backups"):
                panels.append(("Backups", self._render_backups(request, site)))
            context["wpfleet_panels"] = [
                *panels,
                ("Resources, live from the infrastructure", views.render_resources(site)),
                ("Jobs", views.render_jobs(site)),
            ]
            if progress["open"]:
                context["wpfleet_live"] = {
                    "url": reverse("admin:sites_site_progress", args=[site.pk]),
                    "fingerprint": progress["fingerprint"],
                    "gone_url": reverse("admin:sites_site_changelist"),
                }
            last = site.last_job
            can_retry = last is not None and last.status == Job.Status.FAILED
            context["wpfleet_tools"] = {
                "changelist": reverse("admin:sites_site_changelist"),
                "pk": site.pk,
                "retry": can_retry and self.has_retry_permission(request),
                "deprovision": site.current_job_id is None and self.has_deprovision_permission(request),
                "wordpress": _live_and_idle(site) and can(request.user, "login_link"),
            }
        return super().change_view(request, object_id, form_url, context)

    # --- the site's own actions: who may, and back to its page ------------------------

    def _site_for(self, request: HttpRequest, object_id: str, operation: str) -> Site:
        site = self.get_object(request, unquote(object_id))
        if site is None or not can(request.user, operation):
            raise PermissionDenied
        return site

    def _site_for_post(self, request: HttpRequest, object_id: str, operation: str) -> Site:
        if request.method != "POST":
            raise PermissionDenied  # a GET (a prefetch, a pasted link) must not log anyone in nor change anything
        return self._site_for(request, object_id, operation)

    def _back_to_site(
        self, request: HttpRequest, site: Site, error: Exception | str | None = None
    ) -> HttpResponseRedirect:
        """The site's page; with the service's refusal, if there was one, as an error message."""
        if error is not None:
            self.message_user(request, str(error), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:sites_site_change", args=[site.pk]))

    def _site_subpage(self, request: HttpRequest, site: Site, template: str, title: str, **extra) -> TemplateResponse:
        """A page of one of the site's actions, in the admin's frame, its breadcrumbs leading back to the site."""
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.opts,
            "site": site,
            "site_page": reverse("admin:sites_site_change", args=[site.pk]),
            "media": self.media,
            **extra,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, template, context)

    # --- inside the site's WordPress: one-click login, a new admin password -------------

    def wordpress_login_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Redirect to a one-time link that opens the site's wp-admin as its admin."""
        site = self._site_for_post(request, object_id, "login_link")
        try:
            link = login_link(site)
        except (SiteNotActive, WordPressUserMissing, InfraError) as exc:
            return self._back_to_site(request, site, exc)
        self.log_change(request, site, "Opened its WordPress as the admin (one-click login).")
        response = HttpResponseRedirect(link.url)
        response["Cache-Control"] = "no-store"
        return response

    def _render_domains(self, request: HttpRequest, site: Site) -> str:
        rows = [{"domain": site.domain, "own": True, "state": "ACTIVE", "primary": False}]
        rows += [
            {"domain": d.name, "own": False, "state": d.state, "primary": False} for d in site.domains.order_by("name")
        ]
        primary = site.home_host(desired=True)
        for row in rows:
            row["primary"] = row["domain"] == primary
        url = reverse("admin:sites_site_domains", args=[site.pk, "OP"])
        return render_to_string(
            "wpfleet/domains.html",
            {
                "rows": rows,
                "can_change": can(request.user, "change_domains"),
                "idle": _live_and_idle(site),
                "add_url": url.replace("OP", "add"),
                "remove_url": url.replace("OP", "remove"),
                "primary_url": url.replace("OP", "primary"),
            },
            request=request,
        )

    def domains_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        """Add, remove or make primary one of the site's domains: the API's services, reported as messages."""
        site = self._site_for_post(request, object_id, "change_domains")
        actions = {"add": add_domain, "remove": remove_domain, "primary": set_primary_domain}
        if operation not in actions:
            raise PermissionDenied
        domain = request.POST.get("domain", "")
        try:
            job = actions[operation](site, domain)
        except ValidationError as exc:
            return self._back_to_site(request, site, exc.messages[0])
        except (Domain.DoesNotExist, DomainTaken, SiteBusy, SiteNotActive) as exc:
            return self._back_to_site(request, site, exc)
        verb = {"add": "Adding", "remove": "Removing", "primary": "Making primary"}[operation]
        self.log_change(request, site, f"{verb} domain {domain.strip().lower()} (job #{job.pk}).")
        self.message_user(request, f"{verb} {domain.strip().lower()}: job #{job.pk} is on it.", messages.SUCCESS)
        return self._back_to_site(request, site)

    def admin_password_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Set a new random password for the site's WordPress admin and show it on this page only."""
        site = self._site_for_post(request, object_id, "new_admin_password")
        try:
            credentials = new_admin_password(site)
        except (SiteNotActive, WordPressUserMissing, InfraError) as exc:
            return self._back_to_site(request, site, exc)
        # Logged without the password; shown in this response and nowhere else
        # (not a message: those can travel in a cookie).
        self.log_change(request, site, "Set a new WordPress admin password.")
        response = self._site_subpage(
            request,
            site,
            "wpfleet/admin_password.html",
            f"New WordPress admin password for {site.name}",
            credentials=credentials,
        )
        response["Cache-Control"] = "no-store"
        return response

    # --- the page cache: on or off, purge --------------------------------------------

    def _render_page_cache(self, request: HttpRequest, site: Site) -> str:
        idle = _live_and_idle(site)
        return render_to_string(
            "wpfleet/page_cache.html",
            {
                "site": site,
                "change": idle and can(request.user, "change_settings"),
                "purge": idle and can(request.user, "purge_cache"),
                "turn_url": reverse("admin:sites_site_page_cache", args=[site.pk, "off" if site.page_cache else "on"]),
                "purge_url": reverse("admin:sites_site_page_cache", args=[site.pk, "purge"]),
            },
            request=request,
        )

    def page_cache_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        """Turn the site's page cache on or off, or purge it (POST only, each a job)."""
        if operation not in ("on", "off", "purge"):
            raise PermissionDenied
        site = self._site_for_post(request, object_id, "purge_cache" if operation == "purge" else "change_settings")
        try:
            if operation == "purge":
                job: Job | None = purge_cache(site)
                done = "Page cache purge started"
            else:
                job = change_settings(site, {"page_cache": operation == "on"})
                done = f"Turning the page cache {operation}"
        except (SiteBusy, SiteNotActive) as exc:
            return self._back_to_site(request, site, exc)
        if job is None:
            self.message_user(request, f"The page cache is already {operation}.", messages.INFO)
            return self._back_to_site(request, site)
        self.log_change(request, site, f"{done} (job #{job.pk}).")
        self.message_user(request, f"{done} (job #{job.pk}).", messages.SUCCESS)
        return self._back_to_site(request, site)

    # --- status: suspend and resume ----------------------------------------------------

    def _render_status(self, request: HttpRequest, site: Site) -> str:
        idle = site.current_job_id is None
        return render_to_string(
            "wpfleet/status.html",
            {
                "site": site,
                "badge": views.site_status_badge(site),
                "suspend": idle and site.status == Site.Status.ACTIVE and can(request.user, "suspend_site"),
                "resume": idle and site.status == Site.Status.SUSPENDED and can(request.user, "resume_site"),
                "held": not idle and (can(request.user, "suspend_site") or can(request.user, "resume_site")),
                "suspend_url": reverse("admin:sites_site_suspend", args=[site.pk]),
                "resume_url": reverse("admin:sites_site_resume", args=[site.pk]),
            },
            request=request,
        )

    def suspend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Suspend the site (POST only): Caddy answers 503, its containers stop, its data is kept."""
        site = self._site_for_post(request, object_id, "suspend_site")
        try:
            job = suspend_site(site)
        except (SiteBusy, SiteNotActive) as exc:
            return self._back_to_site(request, site, exc)
        self.log_change(request, site, f"Suspend started (job #{job.pk}).")
        self.message_user(
            request,
            f"Suspending {site.name} (job #{job.pk}): Caddy answers 503 and its containers stop; its data is kept.",
            messages.SUCCESS,
        )
        return self._back_to_site(request, site)

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Serve a suspended site again (POST only)."""
        site = self._site_for_post(request, object_id, "resume_site")
        try:
            job = resume_site(site)
        except (SiteBusy, SiteNotActive) as exc:
            return self._back_to_site(request, site, exc)
        self.log_change(request, site, f"Resume started (job #{job.pk}).")
        self.message_user(request, f"Resuming {site.name} (job #{job.pk}).", messages.SUCCESS)
        return self._back_to_site(request, site)

    # --- usage, PHP, disk: what the site uses and the settings that bound it --------------

    def _render_usage(self, site: Site) -> str:
        return render_to_string(
            "wpfleet/usage.html",
            {
                "site": site,
                "memory": views.size(site.usage_memory),
                "disk": views.disk_usage(site),
                "quota": views.size(site.disk_quota),
                "disk_percent": views.percent(site.usage_disk, site.disk_quota),
            },
        )

    def _render_php(self, request: HttpRequest, site: Site) -> str:
        may = _live_and_idle(site) and can(request.user, "change_settings")
        overrides = site.php_settings or {}
        return render_to_string(
            "wpfleet/php.html",
            {
                "site": site,
                "versions": settings.WPFLEET_PHP_VERSIONS,
                "rows": [(key, value, key in overrides) for key, value in site.php_values.items()],
                "form": PhpForm(site) if may else None,
                "action": reverse("admin:sites_site_php", args=[site.pk]),
                "held": not may and site.status == Site.Status.ACTIVE and can(request.user, "change_settings"),
            },
            request=request,
        )

    def _render_disk(self, request: HttpRequest, site: Site) -> str:
        may = _live_and_idle(site) and can(request.user, "change_settings")
        return render_to_string(
            "wpfleet/disk.html",
            {
                "site": site,
                "used": views.size(site.usage_disk),
                "quota": views.size(site.disk_quota),
                "percent": views.percent(site.usage_disk, site.disk_quota),
                "form": DiskQuotaForm(site) if may else None,
                "action": reverse("admin:sites_site_disk_quota", args=[site.pk]),
            },
            request=request,
        )

    def php_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The site's PHP version and php.ini values: the form (GET), a settings job for what changed (POST)."""
        return self._settings_view(request, object_id, PhpForm, "PHP of {}", "PHP settings")

    def disk_quota_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The site's disk quota: the form (GET), a settings job if it changed (POST)."""
        return self._settings_view(request, object_id, DiskQuotaForm, "Disk quota of {}", "Disk quota")

    def _settings_view(
        self, request: HttpRequest, object_id: str, form_class: type[SettingsForm], title: str, what: str
    ) -> HttpResponse:
        site = self._site_for(request, object_id, "change_settings")
        form = form_class(site, request.POST if request.method == "POST" else None)
        if form.is_valid():
            values = form.changes()
            try:
                job = change_settings(site, values) if values else None
            except (SiteBusy, SiteNotActive) as exc:
                return self._back_to_site(request, site, exc)
            except ValueError as exc:  # a bad value, in the service's words: on the form, nothing done
                form.refuse(exc)
            else:
                if job is None:
                    self.message_user(request, f"{what}: nothing changed.", messages.INFO)
                    return self._back_to_site(request, site)
                done = f"Changing {_describe(values, job)}"
                self.log_change(request, site, f"{done} (job #{job.pk}).")
                self.message_user(request, f"{done} (job #{job.pk}).", messages.SUCCESS)
                return self._back_to_site(request, site)
        return self._site_subpage(
            request,
            site,
            "wpfleet/site_settings.html",
            title.format(site.name),
            crumb=what,
            form=form,
            action=request.path,
        )

    # --- logs: read on their own page, never while the site's page renders -------------

    def _render_logs_link(self, request: HttpRequest, site: Site) -> str:
        return render_to_string(
            "wpfleet/logs_link.html",
            {
                "url": reverse("admin:sites_site_logs", args=[site.pk]),
                "sources": LOG_SOURCES,
                "lines": LOG_LINES_DEFAULT,
                "maximum": settings.WPFLEET_LOG_LINES_MAX,
            },
        )

    def logs_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The latest lines of the site's nginx or PHP log (GET: ?source=nginx|php&lines=N, bounded)."""
        site = self._site_for(request, object_id, "view_logs")
        maximum = settings.WPFLEET_LOG_LINES_MAX
        source = request.GET.get("source", LOG_SOURCES[0])
        raw = request.GET.get("lines", "").strip()
        lines = LOG_LINES_DEFAULT
        if raw:
            if re.fullmatch(r"[0-9]{1,9}", raw):
                asked = int(raw)
                lines = min(max(asked, 1), maximum)
                if lines != asked:
                    self.message_user(
                        request, f"Showing {views.plural(lines, 'line')}: from 1 to {maximum}.", messages.WARNING
                    )
            else:
                self.message_user(
                    request, f"lines must be a whole number from 1 to {maximum}: showing {lines}.", messages.WARNING
                )
        found: list[str] | None = None
        if source not in LOG_SOURCES:
            self.message_user(request, f"source must be one of {', '.join(LOG_SOURCES)}.", messages.ERROR)
        else:
            from sites.ops.logs import site_logs

            try:
                found = site_logs(site, source, lines)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            except InfraError as exc:
                self.message_user(
                    request, f"The {source} log could not be read: {views.reason(exc, site)}", messages.ERROR
                )
        # Not kept by any cache: the admin's views are never_cache (no-store).
        return self._site_subpage(
            request,
            site,
            "wpfleet/logs.html",
            f"Logs of {site.name}",
            source=source,
            sources=LOG_SOURCES,
            lines=lines,
            maximum=maximum,
            found=found,
        )

    # --- cron: how WordPress's scheduled events run, and clearing a flag ------------------

    def _render_cron(self, request: HttpRequest, site: Site) -> str:
        return render_to_string(
            "wpfleet/cron.html",
            {
                "site": site,
                "badge": views.cron_flag_badge(site) if site.cron_flagged else "",
                "maximum": settings.WPFLEET_CRON_MAX_FAILURES,
                "clear": site.cron_flagged and can(request.user, "clear_cron_flag"),
                "clear_url": reverse("admin:sites_site_clear_cron_flag", args=[site.pk]),
            },
            request=request,
        )

    def clear_cron_flag_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Forget the site's cron failures (POST only): it runs again at the next pass."""
        site = self._site_for_post(request, object_id, "clear_cron_flag")
        if not site.cron_failures:
            self.message_user(request, f"The cron of {site.name} has no failures to clear.", messages.INFO)
            return self._back_to_site(request, site)
        from sites.ops.cron import clear_cron_flag

        clear_cron_flag(site)
        self.log_change(request, site, "Cleared the cron flag: its cron runs again at the next pass.")
        self.message_user(
            request, f"Cron flag of {site.name} cleared: its cron runs again at the next pass.", messages.SUCCESS
        )
        return self._back_to_site(request, site)

    # --- backups: take one, restore one, clone one into a new site --------------------

    def _render_backups(self, request: HttpRequest, site: Site) -> str:
        # The same list as the API's GET /sites/<name>/backups.
        backups = site_backups(site.name).order_by("-created_at", "-id")
        rows = [
            {
                "backup": backup,
                "restore_url": reverse("admin:sites_site_restore", args=[site.pk, backup.key]),
                "clone_url": reverse("admin:sites_site_clone", args=[site.pk, backup.key]),
            }
            for backup in backups
        ]
        # The services refuse every action without a repository, and a backup or
        # a restore of a site that is not live and idle: no buttons that can only fail.
        configured, idle = bool(settings.WPFLEET_BACKUP_REPOSITORY), _live_and_idle(site)
        may_back_up, may_restore = can(request.user, "back_up_site"), can(request.user, "restore_site")
        return render_to_string(
            "wpfleet/backups.html",
            {
                "rows": rows,
                "configured": configured,
                "back_up": configured and idle and may_back_up,
                "restore": configured and idle and may_restore,
                "clone": configured and can(request.user, "clone_site"),
                "held": configured and not idle and (may_back_up or may_restore),
                "back_up_url": reverse("admin:sites_site_back_up", args=[site.pk]),
            },
            request=request,
        )

    def back_up_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Start a manual backup of the site."""
        site = self._site_for_post(request, object_id, "back_up_site")
        try:
            job = back_up_site(site)
        except _BACKUP_REFUSALS as exc:
            return self._back_to_site(request, site, exc)
        self.log_change(request, site, f"Backup started (job #{job.pk}).")
        self.message_user(request, f"Backup started (job #{job.pk}).", messages.SUCCESS)
        return self._back_to_site(request, site)

    def restore_view(self, request: HttpRequest, object_id: str, key: str) -> HttpResponse:
        """Say what a restore of the backup does (GET), then start it (POST)."""
        site = self._site_for(request, object_id, "restore_site")
        try:
            backup = find_backup(site.name, key)
        except Backup.DoesNotExist as exc:
            return self._back_to_site(request, site, exc)
        taken = views.backup_taken_at(backup)
        if request.method != "POST":
            return self._site_subpage(
                request,
                site,
                "wpfleet/restore_backup.html",
                f"Restore {site.name} from its backup of {taken}?",
                backup=backup,
            )
        try:
            job = restore_site(site, backup.key)
        except _BACKUP_REFUSALS as exc:
            return self._back_to_site(request, site, exc)
        self.log_change(request, site, f"Restore of backup {backup.key} of {taken} started (job #{job.pk}).")
        self.message_user(
            request,
            f"Restore of the backup of {taken} started (job #{job.pk}): the site as it is now is backed up first.",
            messages.SUCCESS,
        )
        return self._back_to_site(request, site)

    def clone_view(self, request: HttpRequest, object_id: str, key: str) -> HttpResponse:
        """Ask for a new site's name (GET), then build that site from the backup (POST)."""
        site = self._site_for(request, object_id, "clone_site")
        try:
            backup = find_backup(site.name, key)
        except Backup.DoesNotExist as exc:
            return self._back_to_site(request, site, exc)
        taken = views.backup_taken_at(backup)
        form = CloneForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                clone = clone_site(site.name, form.cleaned_data["name"], backup.key)
            except ValidationError as exc:
                form.add_error("name", exc)
            except SiteNameTaken as exc:
                form.add_error("name", str(exc))
            except (CapacityExhausted, *_BACKUP_REFUSALS) as exc:
                return self._back_to_site(request, site, exc)
            else:
                job = f"job #{clone.current_job_id}"
                self.log_addition(request, clone, f"Cloned from backup {backup.key} of {site.name} ({taken}, {job}).")
                self.log_change(request, site, f"Backup {backup.key} of {taken} cloned into the new site {clone.name}.")
                self.message_user(
                    request,
                    f"The site “{clone.name}” is being built from the backup of {site.name} of {taken} ({job}); "
                    "this page shows its job’s progress.",
                    messages.SUCCESS,
                )
                return self._back_to_site(request, clone)
        return self._site_subpage(
            request,
            site,
            "wpfleet/clone_backup.html",
            f"Clone {site.name}’s backup of {taken} into a new site",
            backup=backup,
            form=form,
        )

    # --- actions ---------------------------------------------------------------------

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        # Gone already through has_delete_permission; removed by name too so
        # that a permission change can never bring the ORM delete back.
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Purge the page cache of the selected sites", permissions=["purge"])
    def purge_page_caches(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._open_jobs(
            request, queryset, purge_cache, "Page cache purge", "not active", "queued for a page cache purge"
        )

    def _open_jobs(
        self, request: HttpRequest, queryset: QuerySet, start, what: str, refused: str, queued: str
    ) -> HttpResponse | None:
        """A bulk action that opens one job per site through ``start`` (a service), tallied and logged."""
        tally = views.Tally()
        for site in queryset.order_by("name"):
            try:
                job = start(site)
            except (SiteBusy, SiteNotActive) as exc:
                tally.skip(site.name, "job in progress" if isinstance(exc, SiteBusy) else refused)
                continue
            tally.done.append(site.name)
            self.log_change(request, site, f"{what} started (job #{job.pk}).")
        views.report(self, request, tally, "site", queued)
        return _safe_next(request)

    @admin.action(description="Suspend the selected sites…", permissions=["suspend"])
    def suspend_sites(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("post") != "yes":
            return self._confirm(
                request,
                queryset,
                action="suspend_sites",
                title="Suspend sites?",
                verb="suspend",
                verb_past="suspended",
                consequence=(
                    "Caddy answers each site's domains with a 503 page and its containers stop, by a suspend "
                    "job. Its files, database, domains and backups are kept: resuming serves it again."
                ),
                skip=lambda site: _skip_unless(site, Site.Status.ACTIVE, "not active"),
                button="Yes, suspend",
            )
        return self._open_jobs(request, queryset, suspend_site, "Suspend", "not active", "queued for suspension")

    @admin.action(description="Resume the selected sites", permissions=["resume"])
    def resume_sites(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._open_jobs(request, queryset, resume_site, "Resume", "not suspended", "queued to resume")

    @admin.action(description="Clear the cron flag of the selected sites", permissions=["clear_cron"])
    def clear_cron_flags(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        from sites.ops.cron import clear_cron_flag

        tally = views.Tally()
        for site in queryset.order_by("name"):
            if not site.cron_flagged:
                tally.skip(site.name, "cron not flagged")
                continue
            clear_cron_flag(site)
            tally.done.append(site.name)
            self.log_change(request, site, "Cleared the cron flag: its cron runs again at the next pass.")
        views.report(self, request, tally, "cron flag", "cleared")
        return _safe_next(request)

    @admin.action(description="Retry the failed job of the selected sites", permissions=["retry"])
    def retry_failed_jobs(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        tally = views.Tally()
        for site in queryset.select_related("last_job").order_by("name"):
            job = site.last_job
            if job is None or job.status != Job.Status.FAILED:
                tally.skip(site.name, "job in progress" if site.current_job_id else "no failed job")
                continue
            try:
                retry_site(site)
            except SiteBusy:
                tally.skip(site.name, "job in progress")
                continue
            tally.done.append(site.name)
            self.log_change(request, site, f"Retried its failed {job.type_label.lower()} job #{job.pk}.")
        views.report(self, request, tally, "site", "queued for retry")
        return _safe_next(request)

    @admin.action(description="Delete (deprovision) the selected sites…", permissions=["deprovision"])
    def deprovision_sites(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("post") != "yes":
            return self._confirm(
                request,
                queryset,
                action="deprovision_sites",
                title="Delete sites?",
                verb="delete",
                verb_past="deleted",
                consequence=(
                    "Each site's containers, network, volume (all its uploaded files), database and "
                    "database user, and its Caddy route are removed by a deprovision job. This cannot be undone."
                ),
                skip=lambda site: "job in progress" if site.current_job_id else "",
                button="Yes, delete",
            )
        tally = views.Tally()
        for site in queryset.order_by("name"):
            try:
                delete_site(site)
            except SiteBusy:
                tally.skip(site.name, "job in progress")
                continue
            tally.done.append(site.name)
            self.log_change(request, site, "Deletion requested: a deprovision job removes it and its resources.")
        views.report(self, request, tally, "site", "queued for deletion")
        return _safe_next(request)

    @admin.action(description="Clean up the selected zombie sites…", permissions=["cleanup"])
    def cleanup_zombies(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        zombies = list(zombie_sites().filter(pk__in=queryset.values("pk")).select_related("last_job"))
        zombie_ids = {site.pk for site in zombies}
        if request.POST.get("post") != "yes":
            return self._confirm(
                request,
                queryset,
                action="cleanup_zombies",
                title="Clean up zombie sites?",
                verb="clean up",
                verb_past="cleaned up",
                consequence=(
                    "Whatever each zombie site's failed jobs left behind (containers, network, volume, "
                    "database, Caddy route) is removed now, then the site's record. Sites that are not "
                    "zombies are left alone."
                ),
                skip=lambda site: "" if site.pk in zombie_ids else "not a zombie",
                button="Yes, clean up",
            )
        tally = views.Tally()
        for site in queryset.order_by("name"):
            if site.pk not in zombie_ids:
                tally.skip(site.name, "not a zombie")
        # The code of manage.py cleanup_zombies, limited to the selection.
        result = cleanup(sites=zombies, include_orphans=False)
        failed = {line.split(":", 1)[0] for line in result.errors}
        secrets = known_secrets() + [site.db_password for site in zombies]
        tally.failed = [redact(line, secrets) for line in result.errors]
        for site in zombies:
            if site.name in failed:
                continue
            tally.done.append(site.name)
            self.log_change(request, site, "Cleaned up as a zombie: its leftovers and its record were removed.")
        views.report(self, request, tally, "zombie site", "cleaned up")
        return _safe_next(request)

    def _confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        *,
        action: str,
        title: str,
        verb: str,
        verb_past: str,
        consequence: str,
        skip,
        button: str,
    ) -> TemplateResponse:
        sites = list(queryset.select_related("last_job").order_by("name"))
        rows = [{"site": site, "skip": skip(site), "badge": views.site_status_badge(site)} for site in sites]
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.opts,
            "rows": rows,
            "acting": sum(1 for row in rows if not row["skip"]),
            "action": action,
            "verb": verb,
            "verb_past": verb_past,
            "consequence": consequence,
            "button": button,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "next": request.POST.get("_next", ""),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "wpfleet/confirm_action.html", context)


# --- the admin's home: the host's capacity (templates/admin/index.html) -------------------


def _with_capacity(index):
    """The admin site's home, with the host's capacity (sites.ops.capacity) for its template."""

    @functools.wraps(index)
    def view(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return index(request, {"capacity": host_capacity(), **(extra_context or {})})

    return view


# Before hosting/urls.py reads admin.site.urls, which routes the home to this attribute.
admin.site.index = _with_capacity(admin.site.index)  # type: ignore[method-assign]
