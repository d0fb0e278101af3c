from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ParseError
from rest_framework.settings import api_settings

from jobs.models import Job, JobStep
from sites.models import Site
from sites.models.validation import NAME_RULE, validate_site_name


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


class SiteSerializer(serializers.ModelSerializer):
    job = JobSummarySerializer(source="last_job", read_only=True)
    zombie = serializers.BooleanField(source="is_zombie", read_only=True)

    class Meta:
        model = Site
        fields = ["name", "status", "domain", "zombie", "created_at", "job"]


def _refuse(message: str, code: str) -> serializers.ValidationError:
    # to_internal_value must raise a mapping; a non-field error carries no field prefix.
    return serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [ErrorDetail(message, code=code)]})


class SiteCreateSerializer(serializers.Serializer):
    """The body of POST /api/sites: exactly one field, ``site``.

    The field declares the schema; ``to_internal_value`` is the one path of
    validation, ending in validate_site_name, the validator the admin uses too.
    """

    site = serializers.RegexField(
        r"^[a-z0-9]{1,32}$",
        min_length=1,
        max_length=32,
        trim_whitespace=False,
        help_text=NAME_RULE + " Must not be taken or reserved.",
    )

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not hasattr(data, "get") or not hasattr(data, "keys"):
            raise ParseError("Expected a JSON object or form fields with a 'site' field.")
        if "site" not in data:
            raise _refuse("The field 'site' is required.", code="required")
        # A client that sends more than the name is confused (a typo, or fields
        # such as status or domain it expects us to honour): say so, act on nothing.
        unknown = [key for key in data.keys() if key != "site"]
        if unknown:
            listed = ", ".join(repr(str(key)[:64]) for key in unknown[:5])
            raise _refuse(f"Unknown field(s): {listed}. The only field is 'site'.", code="unknown_field")
        if hasattr(data, "getlist") and len(data.getlist("site")) > 1:
            raise _refuse("The field 'site' is given more than once.", code="duplicate_field")
        try:
            return {"site": validate_site_name(data.get("site"))}
        except DjangoValidationError as exc:
            raise _refuse(exc.messages[0], code=exc.error_list[0].code or "invalid") from None


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
        "parse_error, unsupported_media_type, too_large, not_authenticated, throttled, ..."
    )
