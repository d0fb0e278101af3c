from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers

from jobs.models import Job, JobStep
from sites.models import Site
from sites.models.validation import NAME_RULE


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
            "id", "site", "type", "status", "attempts", "max_attempts", "error", "next_attempt_at",
            "created_at", "started_at", "finished_at", "steps",
        ]


class SiteSerializer(serializers.ModelSerializer):
    job = JobSummarySerializer(source="last_job", read_only=True)
    zombie = serializers.BooleanField(source="is_zombie", read_only=True)

    class Meta:
        model = Site
        fields = ["name", "status", "domain", "zombie", "created_at", "job"]


class SiteCreateSerializer(serializers.Serializer):
    # Documents the request body only: the view validates with
    # validate_site_name, the one validator, whose rule the pattern states.
    site = serializers.RegexField(
        r"^[a-z0-9]{1,32}$", min_length=1, max_length=32, trim_whitespace=False,
        help_text=NAME_RULE + " Must not be taken or reserved.",
    )


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
