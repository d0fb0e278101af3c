from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ParseError
from rest_framework.settings import api_settings

from jobs.models import Job, JobStep
from sites.models import Backup, Site
from sites.models.validation import (
    DOMAIN_RULE,
    NAME_RULE,
    TITLE_MAX,
    validate_admin_email,
    validate_admin_user,
    validate_site_name,
    validate_title,
)


class JobStepSerializer(serializers.ModelSerializer):
    duration_ms = serializers.SerializerMethodField()

    class Meta:
        model = JobStep
        fields = ["name", "phase", "attempt", "outcome", "error", "started_at", "finished_at", "duration_ms"]

    def get_duration_ms(self, step: JobStep) -> int | None:
        duration = step.duration
        return None if duration is None else int(duration.total_seconds() * 1000)


class JobSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["id", "type", "status", "attempts", "max_attempts"]


class JobSerializer(serializers.ModelSerializer):
    site = serializers.CharField(source="subject_name")
    steps = JobStepSerializer(many=True, read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "site",
            "type",
            "status",
            "attempts",
            "max_attempts",
            "error",
            "next_attempt_at",
            "created_at",
            "started_at",
            "finished_at",
            "steps",
        ]


class DomainEntrySerializer(serializers.Serializer):
    domain = serializers.CharField(help_text="Lowercase ASCII (punycode for international names).")
    primary = serializers.BooleanField(help_text="WordPress calls this one home (its home and siteurl).")
    state = serializers.ChoiceField(
        choices=["ACTIVE", "ADDING", "REMOVING"], help_text="ADDING and REMOVING: the site's job is on it."
    )


class UsageSerializer(serializers.Serializer):
    """What the site uses, as the worker last read it in bulk (null: not read yet)."""

    memory = serializers.IntegerField(allow_null=True, help_text="Bytes of memory of its containers (0: stopped).")
    cpu_percent = serializers.FloatField(allow_null=True, help_text="% of one CPU over the last interval.")
    disk_used = serializers.IntegerField(allow_null=True, help_text="Bytes its files take.")
    disk_quota = serializers.IntegerField(help_text="Bytes its files may take.")
    requests_last_hour = serializers.IntegerField(allow_null=True, help_text="Requests nginx logged in the last hour.")
    collected_at = serializers.DateTimeField(allow_null=True)


class CronSerializer(serializers.Serializer):
    """WordPress cron, run by the panel's worker (the site runs with DISABLE_WP_CRON)."""

    last_run = serializers.DateTimeField(allow_null=True)
    next_run = serializers.DateTimeField(allow_null=True)
    failures = serializers.IntegerField(help_text="Failed runs in a row.")
    flagged = serializers.BooleanField(help_text="Failed too often: not run until an operator clears it.")
    error = serializers.CharField(help_text="The last failure's message.")


class SiteSerializer(serializers.ModelSerializer):
    job = JobSummarySerializer(source="last_job", read_only=True)
    php = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    cron = serializers.SerializerMethodField()
    zombie = serializers.BooleanField(source="is_zombie", read_only=True)
    domains = serializers.SerializerMethodField(help_text="Every hostname of the site: its own first.")

    class Meta:
        model = Site
        fields = [
            "name",
            "status",
            "domain",
            "domains",
            "title",
            "admin_user",
            "admin_email",
            "zombie",
            "page_cache",
            "php_version",
            "php",
            "disk_quota",
            "usage",
            "cron",
            "created_at",
            "job",
        ]

    @extend_schema_field(serializers.DictField(help_text="Every php.ini value the site runs with."))
    def get_php(self, site: Site) -> dict[str, Any]:
        return dict(site.php_values)

    @extend_schema_field(UsageSerializer)
    def get_usage(self, site: Site) -> dict[str, Any]:
        return {
            "memory": site.usage_memory,
            "cpu_percent": site.usage_cpu,
            "disk_used": site.usage_disk,
            "disk_quota": site.disk_quota,
            "requests_last_hour": site.usage_requests,
            "collected_at": site.usage_at,
        }

    @extend_schema_field(CronSerializer)
    def get_cron(self, site: Site) -> dict[str, Any]:
        return {
            "last_run": site.cron_ran_at,
            "next_run": site.cron_due_at,
            "failures": site.cron_failures,
            "flagged": site.cron_flagged,
            "error": site.cron_error,
        }

    @extend_schema_field(DomainEntrySerializer(many=True))
    def get_domains(self, site: Site) -> list[dict[str, Any]]:
        rows = list(site.domains.all()) if site.pk is not None else []
        primary = next((row.name for row in rows if row.primary and row.state != "REMOVING"), site.domain)
        own = {"domain": site.domain, "primary": primary == site.domain, "state": "ACTIVE"}
        return [own] + [{"domain": r.name, "primary": r.name == primary, "state": r.state} for r in rows]


class DomainAddSerializer(serializers.Serializer):
    """The body of POST /api/sites/<name>/domains."""

    domain = serializers.CharField(max_length=1000, help_text=DOMAIN_RULE)


class TextOnlyField(serializers.CharField):
    """A string as sent: 8.4 (a number) is not "8.4"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class SiteSettingsSerializer(serializers.Serializer):
    """The body of PATCH /api/sites/<name>: the settings to change."""

    page_cache = serializers.BooleanField(
        required=False,
        help_text="nginx's page cache for anonymous visitors (default true). A change runs a job; "
        "the cache is purged either way.",
    )
    php_version = TextOnlyField(
        required=False, help_text="One of the versions offered (WPFLEET_PHP_VERSIONS); switched blue/green."
    )
    php = serializers.JSONField(
        required=False,
        help_text="php.ini values to change: memory_limit, upload_max_filesize, post_max_size (sizes like 256M), "
        "max_execution_time (seconds); bounded by the panel's settings.",
    )
    disk_quota = serializers.JSONField(
        required=False, help_text='Bytes the site\'s files may take: a number, or a size like "5G"; not below use.'
    )


class LogsSerializer(serializers.Serializer):
    site = serializers.CharField()
    log = serializers.ChoiceField(choices=["nginx", "php"], help_text="Which log: the source asked for.")
    lines = serializers.ListField(child=serializers.CharField(), help_text="Oldest first, each with its time.")


class DomainChangeSerializer(serializers.Serializer):
    """The body of PATCH /api/sites/<name>/domains/<domain>: only ``{"primary": true}``."""

    primary = serializers.BooleanField(help_text="true: WordPress calls this domain home.")


def _refuse(message: str, code: str) -> serializers.ValidationError:
    # to_internal_value must raise a mapping; a non-field error carries no field prefix.
    return serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [ErrorDetail(message, code=code)]})


class SiteCreateSerializer(serializers.Serializer):
    """The body of POST /api/sites: ``site``, and optionally WordPress's ``title``, ``admin_email`` and ``admin_user``.

    The fields declare the schema; ``to_internal_value`` is the one path of
    validation, ending in the validators the admin and the service use too.
    """

    site = serializers.RegexField(
        r"^[a-z0-9]{1,32}$",
        min_length=1,
        max_length=32,
        trim_whitespace=False,
        help_text=NAME_RULE + " Must not be taken or reserved.",
    )
    title = serializers.CharField(
        required=False, max_length=TITLE_MAX, help_text="WordPress's site title (default: the name)."
    )
    admin_email = serializers.EmailField(required=False, help_text="The WordPress admin's email (default: a setting).")
    admin_user = serializers.RegexField(
        r"^[A-Za-z0-9_.@-]{3,60}$",
        required=False,
        help_text="The WordPress admin's login (default: random; guessable names such as admin are refused).",
    )

    VALIDATORS: dict[str, Callable[[object], str]] = {
        "site": validate_site_name,
        "title": validate_title,
        "admin_email": validate_admin_email,
        "admin_user": validate_admin_user,
    }

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not hasattr(data, "get") or not hasattr(data, "keys"):
            raise ParseError("Expected a JSON object or form fields with a 'site' field.")
        if "site" not in data:
            raise _refuse("The field 'site' is required.", code="required")
        # A client that sends more than we know is confused (a typo, or fields
        # such as status or domain it expects us to honour): say so, act on nothing.
        unknown = [key for key in data.keys() if key not in self.VALIDATORS]
        if unknown:
            listed = ", ".join(repr(str(key)[:64]) for key in unknown[:5])
            known = ", ".join(f"'{name}'" for name in self.VALIDATORS)
            raise _refuse(f"Unknown field(s): {listed}. The fields are {known}.", code="unknown_field")
        values: dict[str, str] = {}
        for field, validate in self.VALIDATORS.items():
            if field not in data:
                continue
            if hasattr(data, "getlist") and len(data.getlist(field)) > 1:
                raise _refuse(f"The field '{field}' is given more than once.", code="duplicate_field")
            try:
                values[field] = validate(data.get(field))
            except DjangoValidationError as exc:
                raise _refuse(exc.messages[0], code=exc.error_list[0].code or "invalid") from None
        return values


class SiteCreateSchema(OpenApiSerializerExtension):
    # The view refuses any field but 'site'; say so in the schema.
    target_class = SiteCreateSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class ErrorSerializer(serializers.Serializer):
    """The body of every API error."""

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")
    code = serializers.CharField(
        help_text="A stable code for programs: invalid, reserved, required, unknown_field, taken, busy, not_found, "
        "not_active, no_such_user, unavailable, parse_error, unsupported_media_type, too_large, not_authenticated, "
        "throttled, capacity, ..."
    )
    resource = serializers.CharField(
        required=False,
        help_text="With code capacity (507) only: the exhausted resource, "
        "one of sites, memory, disk, addresses, db_connections.",
    )


class CredentialsSerializer(serializers.Serializer):
    """The WordPress admin's new password: shown in this answer only, kept nowhere."""

    username = serializers.CharField()
    password = serializers.CharField()


class LoginLinkSerializer(serializers.Serializer):
    """A link that opens wp-admin logged in as the site's admin: once, until ``expires_at``."""

    url = serializers.URLField()
    expires_at = serializers.DateTimeField()


class BackupSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="key", help_text="The backup's id: name it to restore or clone.")
    created_at = serializers.DateTimeField(help_text="When the backup started: the site as it was then.")
    size_bytes = serializers.IntegerField(help_text="The site's files (as a tar) and database dump, in bytes.")
    added_bytes = serializers.IntegerField(
        help_text="What the repository had to store for it (encrypted, deduplicated against every other backup)."
    )
    kind = serializers.ChoiceField(choices=Backup.Kind.values)

    class Meta:
        model = Backup
        fields = ["id", "created_at", "size_bytes", "added_bytes", "kind"]


class RestoreSerializer(serializers.Serializer):
    backup = serializers.CharField(max_length=64, help_text="The id of one of the site's backups.")


class CloneSerializer(serializers.Serializer):
    site = serializers.CharField(max_length=64, help_text="The new site's name. " + NAME_RULE)
    backup = serializers.CharField(
        max_length=64, required=False, help_text="The backup to clone (default: the site's latest)."
    )
