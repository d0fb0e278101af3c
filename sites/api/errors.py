"""Every API error is JSON: {"detail": "...", "code": "...", ["errors": {...}]}.

A site refused for lack of room is 507 with code "capacity" and "resource",
the exhausted one (sites.ops.capacity.RESOURCES).
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from sites.infra.errors import InfraError
from sites.models import Backup
from sites.services import (
    BackupsDisabled,
    CapacityExhausted,
    DomainTaken,
    SiteBusy,
    SiteNameTaken,
    SiteNotActive,
    WordPressUserMissing,
)


def _first_message(detail: object) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key in ("non_field_errors", "detail") else f"{key}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT


# Domain errors of the service layer, as the API answers them (the admin shows
# the same messages): one place, so no view needs a try/except of its own.
DOMAIN_ERRORS: dict[type[Exception], str] = {
    SiteNameTaken: "taken",
    DomainTaken: "taken",
    SiteBusy: "busy",
    SiteNotActive: "not_active",
    WordPressUserMissing: "no_such_user",
}


class Unavailable(APIException):
    """A dependency did not do what was asked (Docker, the site's PHP): trying again later may help."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


def _first_code(codes: object) -> str:
    if isinstance(codes, dict):
        return _first_code(next(iter(codes.values()), "invalid"))
    if isinstance(codes, list):
        return _first_code(codes[0]) if codes else "invalid"
    return str(codes)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    for domain_error, code in DOMAIN_ERRORS.items():
        if isinstance(exc, domain_error):
            exc = Conflict(str(exc), code=code)
            break
    if isinstance(exc, Backup.DoesNotExist):
        exc = NotFound(str(exc))
    if isinstance(exc, BackupsDisabled):
        exc = Unavailable(str(exc), code="backups_disabled")
    if isinstance(exc, CapacityExhausted):
        # Not a 503: trying again soon will not help until an operator makes room.
        return Response(
            {"detail": str(exc), "code": "capacity", "resource": exc.resource},
            status=status.HTTP_507_INSUFFICIENT_STORAGE,
        )
    if isinstance(exc, InfraError):
        # Adapters' messages name the dependency and what failed, never a secret.
        exc = Unavailable(str(exc), code="unavailable")
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body too large.", "code": "too_large"}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    if isinstance(exc, SuspiciousOperation):
        # Raised while Django parses the body (too many form fields, ...).
        # Left alone, Django would answer with its HTML 400 page; log it where
        # Django logs these, and answer in JSON like every other API error.
        logging.getLogger(f"django.security.{exc.__class__.__name__}").warning("%s", exc)
        if isinstance(exc, TooManyFieldsSent):
            return Response({"detail": "Too many fields in the request.", "code": "too_many_fields"}, status=400)
        return Response({"detail": "Bad request.", "code": "bad_request"}, status=status.HTTP_400_BAD_REQUEST)
    # DRF turns these two into its own exceptions only inside its handler; do
    # it first so that they get a code like every other error.
    if isinstance(exc, Http404):
        exc = NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.data = {"detail": _first_message(exc.detail), "code": _first_code(exc.get_codes())}
    elif isinstance(exc, APIException):
        codes = exc.get_codes()
        response.data = {"detail": _first_message(exc.detail), "code": codes if isinstance(codes, str) else "error"}
    return response
