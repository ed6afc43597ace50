"""``POST /api/v1/policies/simulate``: what would happen to a request (staff only)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals.api.authentication import ReviewerTokenAuthentication
from policies.simulate import simulate


class SimulateInSerializer(serializers.Serializer):
    action = serializers.RegexField(r"^[a-z0-9_.:-]{1,100}$", max_length=100)
    summary = serializers.CharField(required=False, max_length=500)
    context = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]
    payload = serializers.DictField(required=False, default=dict)
    requester = serializers.DictField(required=False, default=dict)
    callback_url = serializers.CharField(required=False, max_length=2000)
    agent = serializers.CharField(required=False, default="", max_length=100)


class SimulateView(APIView):
    authentication_classes = [ReviewerTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]

    @extend_schema(
        operation_id="simulate",
        summary="Which policy, version and rule would route a request; nothing is stored",
        request=SimulateInSerializer,
        responses={
            200: inline_serializer(
                "Simulation",
                {
                    "matched": serializers.BooleanField(),
                    "hidden": serializers.BooleanField(required=False),
                    "policy": serializers.DictField(allow_null=True),
                    "class": serializers.CharField(required=False),
                    "approvals": serializers.IntegerField(required=False),
                    "levels": serializers.ListField(child=serializers.DictField()),
                    "outcome": serializers.DictField(allow_null=True),
                    "error": serializers.DictField(required=False),
                    "warnings": serializers.ListField(child=serializers.CharField()),
                },
            )
        },
    )
    def post(self, request: Request) -> Response:
        serializer = SimulateInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        body = dict(serializer.validated_data)
        return Response(simulate(body, agent=body.pop("agent"), viewer=request.user))
