"""Every API error is JSON: {"detail": "...", "code": "...", ["errors": {...}]}."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _first_message(detail: object) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key in ("non_field_errors", "detail") else f"{key}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body too large.", "code": "too_large"}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.data = {"detail": _first_message(exc.detail), "code": "invalid", "errors": exc.detail}
    elif isinstance(exc, APIException):
        codes = exc.get_codes()
        response.data = {"detail": _first_message(exc.detail), "code": codes if isinstance(codes, str) else "error"}
    return response
