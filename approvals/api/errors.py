"""Every API error as JSON: ``{"code", "detail", "errors"?}`` (README, API)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from approvals import errors as domain
from approvals.representation import represent

logger = logging.getLogger(__name__)

DOMAIN_STATUS = {
    domain.NoPolicy: 422,
    domain.PolicyBroken: 422,
    domain.ConditionError: 422,
    domain.ActionNotAllowed: 403,
    domain.IdempotencyConflict: 409,
    domain.NotVisible: 404,
    domain.Forbidden: 403,
    domain.Invalid: 400,
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, domain.Conflict):
        return conflict_response(exc)
    if isinstance(exc, domain.ApprovalError):
        body: dict[str, object] = {"code": exc.code, "detail": exc.detail}
        if isinstance(exc, domain.Invalid):
            body["errors"] = exc.errors
        if isinstance(exc, domain.ConditionError):
            body["condition"] = exc.condition
        return Response(body, status=DOMAIN_STATUS[type(exc)])
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return None  # an unexpected error: Django logs it; handler500 answers JSON
    response.data = _error_body(exc)
    return response


def conflict_response(exc: domain.Conflict) -> Response:
    """409 with the request resource, plus the usual code and detail."""
    body = dict(represent(exc.request))
    body.update(code=exc.code, detail=exc.detail)
    return Response(body, status=status.HTTP_409_CONFLICT)


def _error_body(exc: exceptions.APIException) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        errors = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        return {
            "code": "invalid",
            "detail": _summary(errors),
            "errors": _flatten(errors),
        }
    code = exc.get_codes() if isinstance(exc.detail, str) else exc.default_code
    return {"code": str(code), "detail": str(exc.detail)}


def _summary(errors: dict) -> str:
    fields = ", ".join(sorted(errors))
    return f"Invalid input in: {fields}."


def _flatten(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """Nested serializer errors as ``{"requester.on_behalf_of": ["…"]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(errors, list) and errors and not isinstance(errors[0], (dict, list)):
        flat[prefix.rstrip(".")] = [str(e) for e in errors]
    elif isinstance(errors, list):
        for index, value in enumerate(errors):
            flat.update(_flatten(value, f"{prefix}{index}."))
    else:
        flat[prefix.rstrip(".")] = [str(errors)]
    return flat


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_failure(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"code": "server_error", "detail": "Something went wrong on our side; it is logged."},
            status=500,
        )
    return server_error(request)
