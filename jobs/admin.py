from django.contrib import admin

from jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "site_name", "status", "attempts", "created_at"]
    list_filter = ["type", "status"]
