from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, ParseError, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from jobs.models import Job, JobStep
from sites.api.parsers import BoundedMultiPartParser, StrictJSONParser
from sites.api.serializers import (
    BackupSerializer,
    CloneSerializer,
    CredentialsSerializer,
    DomainAddSerializer,
    DomainChangeSerializer,
    ErrorSerializer,
    JobSerializer,
    LoginLinkSerializer,
    LogsSerializer,
    RestoreSerializer,
    SiteCreateSerializer,
    SiteSerializer,
    SiteSettingsSerializer,
)
from sites.models import Domain, Site
from sites.ops import health
from sites.permissions import can
from sites.services import (
    SETTINGS,
    add_domain,
    back_up_site,
    change_settings,
    clone_site,
    create_site,
    delete_site,
    login_link,
    new_admin_password,
    purge_cache,
    remove_domain,
    restore_site,
    resume_site,
    set_primary_domain,
    site_backups,
    suspend_site,
)


def _errors(described: dict[int, str] | None = None) -> dict[int, OpenApiResponse]:
    """Schema entries for error statuses, each with the error body; 401 and 429 can answer any call."""
    described = {401: "No or invalid credentials", 429: "Too many requests for this token", **(described or {})}
    return {code: OpenApiResponse(ErrorSerializer, description=text) for code, text in described.items()}


_BODY_ERRORS = {413: "Body larger than the limit", 415: "Body neither JSON nor form data"}
# sites.ops.capacity: nothing is written; "resource" names what is exhausted.
_NO_ROOM = "The host has no room for another site (code capacity, resource names which)"


# A site as the API shows it: its latest job and its domains, read with it.
SITE_ROWS = Site.objects.select_related("last_job").prefetch_related("domains")


class HealthRateThrottle(AnonRateThrottle):
    """Per client address, logged in or not: health runs a probe of every dependency."""

    scope = "health"

    def get_cache_key(self, request: Request, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class SitePagination(PageNumberPagination):
    # A host holds thousands of sites: one page is a bounded response.
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


@extend_schema_view(get=extend_schema(responses={200: SiteSerializer(many=True), **_errors({404: "No such page"})}))
class SiteListCreate(generics.ListAPIView):
    operations = {"GET": "list_sites", "POST": "create_site"}
    serializer_class = SiteSerializer
    pagination_class = SitePagination
    queryset = SITE_ROWS.order_by("name")
    parser_classes = [StrictJSONParser, FormParser, BoundedMultiPartParser]

    @extend_schema(
        request=SiteCreateSerializer,
        responses={
            202: SiteSerializer,
            **_errors(
                {
                    400: "Invalid or reserved name; malformed body; missing, repeated or unknown field",
                    409: "Name already taken",
                    413: "Body larger than the limit",
                    415: "Body neither JSON nor form data",
                    507: _NO_ROOM,
                }
            ),
        },
    )
    def post(self, request: Request) -> Response:
        body = SiteCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # SiteNameTaken (a race lost to another request) answers 409 through
        # the API's exception handler, like every domain error.
        values = dict(body.validated_data)
        site = create_site(values.pop("site"), **values)
        return Response(SiteSerializer(site).data, status=status.HTTP_202_ACCEPTED)


class SiteDetail(APIView):
    operations = {"GET": "view_site", "PATCH": "change_settings", "DELETE": "delete_site"}
    parser_classes = [StrictJSONParser, FormParser, BoundedMultiPartParser]
    serializer_class = SiteSerializer

    def _site(self, name: str) -> Site:
        return get_object_or_404(SITE_ROWS, name=name)

    @extend_schema(responses={200: SiteSerializer, **_errors({404: "No such site"})})
    def get(self, request: Request, name: str) -> Response:
        return Response(SiteSerializer(self._site(name)).data)

    @extend_schema(
        request=SiteSettingsSerializer,
        responses={
            200: SiteSerializer,
            202: SiteSerializer,
            **_errors(
                {
                    400: "Not an object of known settings, or a value of the wrong type",
                    404: "No such site",
                    409: "The site is not active, or a job holds it",
                    **_BODY_ERRORS,
                }
            ),
        },
        description="202: a job serves the site with the new settings (the site's ``job``); 200: nothing to change.",
    )
    def patch(self, request: Request, name: str) -> Response:
        site = self._site(name)
        _only(request.data, SETTINGS)
        body = SiteSettingsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not body.validated_data:
            raise ValidationError({"detail": [f"Name at least one setting: {', '.join(SETTINGS)}."]}, code="required")
        try:
            job = change_settings(site, dict(body.validated_data))  # SiteBusy, SiteNotActive answer 409
        except ValueError as error:
            raise ValidationError({"detail": [str(error)]}, code="invalid") from None
        return Response(
            SiteSerializer(self._site(name)).data,
            status=status.HTTP_200_OK if job is None else status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "final_backup",
                bool,
                description="false: delete without taking the final backup first (default true: a live site is "
                "backed up, and the delete is refused if that fails)",
            )
        ],
        responses={
            202: SiteSerializer,
            **_errors(
                {400: "final_backup is not true or false", 404: "No such site", 409: "Another job of the site is open"}
            ),
        },
    )
    def delete(self, request: Request, name: str) -> Response:
        flag = request.query_params.get("final_backup", "true")
        if flag not in ("true", "false"):
            raise ValidationError({"final_backup": ["Must be true or false."]}, code="invalid")
        delete_site(self._site(name), final_backup=flag == "true")  # SiteBusy answers 409
        return Response(SiteSerializer(self._site(name)).data, status=status.HTTP_202_ACCEPTED)


def _accepted(name: str) -> Response:
    site = get_object_or_404(SITE_ROWS, name=name)
    return Response(SiteSerializer(site).data, status=status.HTTP_202_ACCEPTED)


def _only(data: Any, fields: tuple[str, ...]) -> None:
    """Refuse a body that is not an object, or that names fields we do not know."""
    if not hasattr(data, "keys"):
        raise ParseError("Expected a JSON object.")
    unknown = [str(key)[:64] for key in data.keys() if key not in fields]
    if unknown:
        raise ValidationError(
            {"detail": [f"Unknown field(s): {', '.join(unknown[:5])}. The fields are {', '.join(fields)}."]},
            code="unknown_field",
        )


class SiteDomains(APIView):
    """Add a domain of the customer's to the site: a job routes it, gets its certificate and checks it."""

    operations = {"POST": "change_domains"}
    parser_classes = [StrictJSONParser, FormParser, BoundedMultiPartParser]

    @extend_schema(
        request=DomainAddSerializer,
        responses={
            202: SiteSerializer,
            **_errors(
                {
                    400: "Not a hostname, an IP address, or a name under the panel's base domain",
                    404: "No such site",
                    409: "The domain belongs to a site already, or another job holds the site, or it is not active",
                }
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        site = get_object_or_404(Site, name=name)
        _only(request.data, ("domain",))
        body = DomainAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            add_domain(site, body.validated_data["domain"])
        except DjangoValidationError as exc:
            raise ValidationError({"domain": exc.messages}, code=exc.error_list[0].code or "invalid") from None
        return _accepted(name)


class SiteDomain(APIView):
    """One of the site's domains: remove it, or make it the one WordPress calls home."""

    operations = {"DELETE": "change_domains", "PATCH": "change_domains"}
    parser_classes = [StrictJSONParser, FormParser, BoundedMultiPartParser]

    def _missing(self, exc: Exception) -> NotFound:
        return NotFound(str(exc))

    @extend_schema(
        responses={202: SiteSerializer, **_errors({404: "No such site or domain", 409: "Another job holds the site"})}
    )
    def delete(self, request: Request, name: str, domain: str) -> Response:
        site = get_object_or_404(Site, name=name)
        try:
            remove_domain(site, domain)
        except Domain.DoesNotExist as exc:
            raise self._missing(exc) from None
        return _accepted(name)

    @extend_schema(
        request=DomainChangeSerializer,
        responses={
            202: SiteSerializer,
            **_errors({400: 'Not {"primary": true}', 404: "No such site or domain", 409: "Another job holds the site"}),
        },
    )
    def patch(self, request: Request, name: str, domain: str) -> Response:
        site = get_object_or_404(Site, name=name)
        _only(request.data, ("primary",))
        body = DomainChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data["primary"] is not True:
            raise ValidationError(
                {"primary": ["Only true: to stop calling this domain home, make another one primary."]}, code="invalid"
            )
        try:
            set_primary_domain(site, domain)
        except Domain.DoesNotExist as exc:
            raise self._missing(exc) from None
        return _accepted(name)


_WORDPRESS_ERRORS = _errors(
    {
        404: "No such site",
        409: "The site is not active, or a job holds it, or its WordPress has no such admin user",
        503: "The site's PHP container did not run the request; try again",
    }
)


def _secret(body: dict) -> Response:
    # A secret shown once: no cache along the way may keep a copy.
    response = Response(body)
    response["Cache-Control"] = "no-store"
    return response


class SiteAdminPassword(APIView):
    """Set a new random password for the site's WordPress admin and show it, once."""

    operations = {"POST": "new_admin_password"}

    @extend_schema(request=None, responses={200: CredentialsSerializer, **_WORDPRESS_ERRORS})
    def post(self, request: Request, name: str) -> Response:
        credentials = new_admin_password(get_object_or_404(Site, name=name))
        return _secret(CredentialsSerializer(credentials).data)


class SiteLoginLink(APIView):
    """A one-time link that opens the site's wp-admin logged in as its admin."""

    operations = {"POST": "login_link"}

    @extend_schema(request=None, responses={200: LoginLinkSerializer, **_WORDPRESS_ERRORS})
    def post(self, request: Request, name: str) -> Response:
        link = login_link(get_object_or_404(Site, name=name))
        return _secret(LoginLinkSerializer(link).data)


def _job_accepted(job: Job) -> Response:
    return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


_BACKUP_ERRORS = {503: "No backup repository is configured, or it did not answer"}


class SiteBackups(APIView):
    """The site's backups (newest first), and taking one now.

    The list also answers for a deleted site's name while its final backup is kept.
    """

    operations = {"GET": "list_backups", "POST": "back_up_site"}

    @extend_schema(
        responses={200: BackupSerializer(many=True), **_errors({404: "No such site, and no deleted one of that name"})}
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(BackupSerializer(site_backups(name).order_by("-created_at", "-id"), many=True).data)

    @extend_schema(
        request=None,
        responses={
            202: JobSerializer,
            **_errors({404: "No such site", 409: "The site is not active, or a job holds it", **_BACKUP_ERRORS}),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        return _job_accepted(back_up_site(get_object_or_404(Site, name=name)))


class SitePurgeCache(APIView):
    """Delete every page of the site's page cache (a job: the next visitor of each page gets it fresh)."""

    operations = {"POST": "purge_cache"}

    @extend_schema(
        request=None,
        responses={
            202: JobSerializer,
            **_errors({404: "No such site", 409: "The site is not active, or a job holds it"}),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        return _job_accepted(purge_cache(get_object_or_404(Site, name=name)))


class SiteSuspend(APIView):
    """Suspend the site: Caddy answers its domains with a 503 page and its containers stop (data kept)."""

    operations = {"POST": "suspend_site"}

    @extend_schema(
        request=None,
        responses={202: JobSerializer, **_errors({404: "No such site", 409: "The site is not active, or busy"})},
    )
    def post(self, request: Request, name: str) -> Response:
        return _job_accepted(suspend_site(get_object_or_404(Site, name=name)))


class SiteResume(APIView):
    """Serve a suspended site again (ACTIVE once verified live)."""

    operations = {"POST": "resume_site"}

    @extend_schema(
        request=None,
        responses={202: JobSerializer, **_errors({404: "No such site", 409: "The site is not suspended, or busy"})},
    )
    def post(self, request: Request, name: str) -> Response:
        return _job_accepted(resume_site(get_object_or_404(Site, name=name)))


class SiteLogs(APIView):
    """The latest lines of the site's nginx (access and errors) or PHP-FPM log, oldest first."""

    operations = {"GET": "view_logs"}

    @extend_schema(
        parameters=[
            OpenApiParameter("source", str, enum=["nginx", "php"], description="nginx (default) or php"),
            OpenApiParameter("lines", int, description="How many (default 100, at most WPFLEET_LOG_LINES_MAX)"),
        ],
        responses={
            200: LogsSerializer,
            **_errors({400: "Unknown source, or lines out of range", 404: "No such site", 503: "Docker"}),
        },
    )
    def get(self, request: Request, name: str) -> Response:
        site = get_object_or_404(Site, name=name)
        source = request.query_params.get("source", "nginx")
        raw = request.query_params.get("lines", "100")
        try:
            lines = int(raw)
        except ValueError:
            raise ValidationError({"lines": ["Must be a whole number."]}, code="invalid") from None
        from sites.ops.logs import site_logs

        try:
            found = site_logs(site, source, lines)
        except ValueError as error:
            raise ValidationError({"detail": [str(error)]}, code="invalid") from None
        return Response({"site": site.name, "log": source, "lines": found})


class SiteRestore(APIView):
    """Put one of the site's backups back (a before-restore backup is taken first; a failure leaves the site as it was)."""

    operations = {"POST": "restore_site"}
    parser_classes = [StrictJSONParser, FormParser, BoundedMultiPartParser]

    @extend_schema(
        request=RestoreSerializer,
        responses={
            202: JobSerializer,
            **_errors(
                {
                    400: "No backup named",
                    404: "No such site, or no such backup of this site",
                    409: "The site is not active, or a job holds it",
                    **_BODY_ERRORS,
                    **_BACKUP_ERRORS,
                }
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        site = get_object_or_404(Site, name=name)
        _only(request.data, ("backup",))
        body = RestoreSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return _job_accepted(restore_site(site, body.validated_data["backup"]))


class SiteClone(APIView):
    """A new site built from a backup of this one (or of a deleted site of this name), under its own URL."""

    operations = {"POST": "clone_site"}
    parser_classes = [StrictJSONParser, FormParser, BoundedMultiPartParser]

    @extend_schema(
        request=CloneSerializer,
        responses={
            202: SiteSerializer,
            **_errors(
                {
                    400: "Invalid or reserved new name; unknown field",
                    404: "No such site or backup",
                    409: "The new name is taken",
                    507: _NO_ROOM,
                    **_BODY_ERRORS,
                    **_BACKUP_ERRORS,
                }
            ),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        _only(request.data, ("site", "backup"))
        body = CloneSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            site = clone_site(name, body.validated_data["site"], body.validated_data.get("backup"))
        except DjangoValidationError as exc:
            raise ValidationError({"site": exc.messages}, code=exc.error_list[0].code or "invalid") from None
        return _accepted(site.name)


@extend_schema_view(get=extend_schema(responses={200: JobSerializer, **_errors({404: "No such job"})}))
class JobDetail(generics.RetrieveAPIView):
    operations = {"GET": "view_job"}
    serializer_class = JobSerializer
    queryset = Job.objects.prefetch_related(Prefetch("steps", queryset=JobStep.objects.order_by("id")))


class Health(APIView):
    """Each dependency's state: 200 when all answer, 503 naming those that do not.

    Anyone may ask (load balancers and monitors have no token), throttled
    per address; only callers allowed to view sites see why a dependency
    failed and how long each took, since the error text names hosts and ports.
    """

    permission_classes = [AllowAny]
    throttle_classes = [HealthRateThrottle]

    @extend_schema(responses={200: OpenApiResponse(), 503: OpenApiResponse(), 429: OpenApiResponse(ErrorSerializer)})
    def get(self, request: Request) -> Response:
        report = health.check_all()
        ok = all(item["ok"] for item in report.values())
        if can(request.user, "view_health_details"):
            dependencies: dict = report
        else:
            dependencies = {name: "ok" if item["ok"] else "degraded" for name, item in report.items()}
        body: dict[str, Any] = {"status": "ok" if ok else "degraded", "dependencies": dependencies}
        if not ok:
            body["failing"] = [name for name, item in report.items() if not item["ok"]]
        return Response(body, status=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE)


class NoSuchResource(APIView):
    """A JSON 404 for URLs under the API that name nothing (to callers who are logged in)."""

    schema = None
    permission_classes = [IsAuthenticated]

    def _not_found(self, request: Request, *args, **kwargs) -> Response:
        raise NotFound("No such resource.")

    get = post = put = patch = delete = _not_found
