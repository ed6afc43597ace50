from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse


class ApiBodyLimitMiddleware:
    """Refuse oversized API bodies from their declared length, before reading them.

    The parser enforces the same limit while reading, for bodies that arrive
    without a Content-Length.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            length = request.META.get("CONTENT_LENGTH") or "0"
            try:
                size = int(length)
            except ValueError:
                return JsonResponse(
                    {"code": "parse_error", "detail": "Content-Length is not a number."},
                    status=400,
                )
            if size > settings.APPROVALS_MAX_BODY_BYTES:
                return JsonResponse(too_large(), status=413)
        return self.get_response(request)


def too_large() -> dict:
    limit = settings.APPROVALS_MAX_BODY_BYTES // 1024
    return {"code": "too_large", "detail": f"The body is larger than {limit} KiB."}
