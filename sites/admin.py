from django.contrib import admin

from sites.models import Site


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "domain", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    readonly_fields = ["status", "domain", "created_at", "updated_at"]
    exclude = ["db_password"]
