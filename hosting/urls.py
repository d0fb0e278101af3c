from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from hosting.login_throttle import ThrottledAdminAuthenticationForm

admin.site.site_header = "wpfleet"
admin.site.site_title = "wpfleet"
admin.site.index_title = "Operators' console"
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("sites.api.urls")),
]
