from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "wpfleet"
admin.site.site_title = "wpfleet"
admin.site.index_title = "Operators' console"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("sites.api.urls")),
]
