"""``GET /api/v1/audit``: the audit trail as JSONL or CSV, streamed."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from approvals.api.authentication import ReviewerTokenAuthentication
from approvals.audit_export import ExportError, Filters, lines

CONTENT_TYPES = {"jsonl": "application/jsonl; charset=utf-8", "csv": "text/csv; charset=utf-8"}


class MayViewAudit(BasePermission):
    message = "Exporting the audit trail needs the view_auditevent permission."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.user.has_perm("approvals.view_auditevent")


class AuditExportView(APIView):
    authentication_classes = [ReviewerTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated, MayViewAudit]

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[JSONRenderer, str]:
        # ``format`` here is the export's (jsonl|csv), not DRF's renderer
        # override; errors are always JSON.
        return JSONRenderer(), "application/json"

    @extend_schema(
        operation_id="export_audit",
        summary="The audit trail, oldest first, streamed as JSONL or CSV",
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="inclusive"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="exclusive"),
            OpenApiParameter("action", str, description="glob on the action, e.g. invoice.*"),
            OpenApiParameter("role", str, description="the owning role at the event"),
            OpenApiParameter("format", str, enum=["jsonl", "csv"]),
        ],
        responses={200: OpenApiResponse(description="JSONL lines or CSV rows")},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        params = request.query_params
        try:
            filters = Filters.parse({key: params.get(key) for key in Filters.__annotations__})
        except ExportError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        response = StreamingHttpResponse(lines(filters), content_type=CONTENT_TYPES[filters.format])
        extension = "csv" if filters.format == "csv" else "jsonl"
        response["Content-Disposition"] = f'attachment; filename="audit.{extension}"'
        return response
