from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sites.api import views

urlpatterns = [
    path("sites", views.SiteListCreate.as_view(), name="api-sites"),
    path("sites/<str:name>", views.SiteDetail.as_view(), name="api-site"),
    path("sites/<str:name>/admin-password", views.SiteAdminPassword.as_view(), name="api-site-admin-password"),
    path("sites/<str:name>/login-link", views.SiteLoginLink.as_view(), name="api-site-login-link"),
    path("sites/<str:name>/domains", views.SiteDomains.as_view(), name="api-site-domains"),
    path("sites/<str:name>/domains/<str:domain>", views.SiteDomain.as_view(), name="api-site-domain"),
    path("sites/<str:name>/backups", views.SiteBackups.as_view(), name="api-site-backups"),
    path("sites/<str:name>/purge-cache", views.SitePurgeCache.as_view(), name="api-site-purge-cache"),
    path("sites/<str:name>/suspend", views.SiteSuspend.as_view(), name="api-site-suspend"),
    path("sites/<str:name>/resume", views.SiteResume.as_view(), name="api-site-resume"),
    path("sites/<str:name>/logs", views.SiteLogs.as_view(), name="api-site-logs"),
    path("sites/<str:name>/restore", views.SiteRestore.as_view(), name="api-site-restore"),
    path("sites/<str:name>/clone", views.SiteClone.as_view(), name="api-site-clone"),
    path("jobs/<int:pk>", views.JobDetail.as_view(), name="api-job"),
    path("health", views.Health.as_view(), name="api-health"),
    # The schema and its viewer describe the API and touch no data: no
    # credentials, and no throttle (whose counters live in the database).
    path("schema/", SpectacularAPIView.as_view(throttle_classes=[]), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema", throttle_classes=[]), name="api-docs"),
    # Anything else under sites/ or jobs/ (a name with a "/", a job id that is
    # not a number) gets the API's JSON 404 rather than Django's HTML page.
    re_path(r"^(?:sites|jobs)/(?s:.*)\Z", views.NoSuchResource.as_view()),
]
