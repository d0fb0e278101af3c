from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ParseError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.models import Job, JobStep
from sites import health
from sites.api.serializers import JobSerializer, SiteCreateSerializer, SiteSerializer
from sites.models import Site
from sites.services import SiteBusy, SiteNameTaken, create_site, delete_site


def _error(message: str, code: str, http_status: int) -> Response:
    return Response({"detail": message, "code": code}, status=http_status)


class SiteListCreate(generics.ListAPIView):
    serializer_class = SiteSerializer
    queryset = Site.objects.select_related("last_job").order_by("name")

    @extend_schema(
        request=SiteCreateSerializer,
        responses={
            202: SiteSerializer,
            400: OpenApiResponse(description="Invalid or reserved name"),
            409: OpenApiResponse(description="Name already taken"),
        },
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if not hasattr(data, "get"):
            raise ParseError("Expected a JSON object or form fields with a 'site' field.")
        if "site" not in data:
            return _error("The field 'site' is required.", "required", status.HTTP_400_BAD_REQUEST)
        try:
            site = create_site(data.get("site"))
        except DjangoValidationError as exc:
            return _error(exc.messages[0], exc.error_list[0].code or "invalid", status.HTTP_400_BAD_REQUEST)
        except SiteNameTaken as exc:
            return _error(str(exc), "taken", status.HTTP_409_CONFLICT)
        return Response(SiteSerializer(site).data, status=status.HTTP_202_ACCEPTED)


class SiteDetail(APIView):
    serializer_class = SiteSerializer

    def _site(self, name: str) -> Site:
        return get_object_or_404(Site.objects.select_related("last_job"), name=name)

    def get(self, request: Request, name: str) -> Response:
        return Response(SiteSerializer(self._site(name)).data)

    @extend_schema(responses={202: SiteSerializer, 404: OpenApiResponse(), 409: OpenApiResponse()})
    def delete(self, request: Request, name: str) -> Response:
        site = self._site(name)
        try:
            delete_site(site)
        except SiteBusy as exc:
            return _error(str(exc), "busy", status.HTTP_409_CONFLICT)
        return Response(SiteSerializer(self._site(name)).data, status=status.HTTP_202_ACCEPTED)


class JobDetail(generics.RetrieveAPIView):
    serializer_class = JobSerializer
    queryset = Job.objects.prefetch_related(Prefetch("steps", queryset=JobStep.objects.order_by("id")))


class Health(APIView):
    """Each dependency's state: 200 when all answer, 503 naming those that do not."""

    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes: list = []

    @extend_schema(responses={200: OpenApiResponse(), 503: OpenApiResponse()})
    def get(self, request: Request) -> Response:
        report = health.check_all()
        ok = all(item["ok"] for item in report.values())
        body = {"status": "ok" if ok else "degraded", "dependencies": report}
        if not ok:
            body["failing"] = [name for name, item in report.items() if not item["ok"]]
        return Response(body, status=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE)
