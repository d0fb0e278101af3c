from __future__ import annotations

from rest_framework import serializers

from jobs.models import Job, JobStep
from sites.models import Site
from sites.validation import NAME_RULE


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
    site = serializers.CharField(source="site_name")
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
    site = serializers.CharField(
        max_length=None, trim_whitespace=False, allow_blank=True,
        help_text=NAME_RULE + " Must not be taken or reserved.",
    )
