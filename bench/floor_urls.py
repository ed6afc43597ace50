"""The floor bench/api.py measures creates against: a bare DRF view doing a
key lookup, serializer validation and one INSERT, behind the same gunicorn
settings and middleware as the service. Used only by the bench."""

from __future__ import annotations

import json

from django.db import connection
from django.urls import path
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals.keys import key_matches, split_prefix
from approvals.models import Agent

TABLE = "bench_floor"


class FloorSerializer(serializers.Serializer):
    action = serializers.CharField(max_length=100)
    summary = serializers.CharField(max_length=500)
    context = serializers.DictField(required=False)
    payload = serializers.DictField(required=False)
    requester = serializers.DictField(required=False)


class FloorView(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request: Request) -> Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        prefix = split_prefix(key)
        agent = Agent.objects.filter(key_prefix=prefix, is_active=True).first() if prefix else None
        if agent is None or not key_matches(key, agent.key_hash):
            raise AuthenticationFailed("Invalid API key.")
        serializer = FloorSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} (agent_id, action, summary, body) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                [agent.pk, data["action"], data["summary"], json.dumps(data)],
            )
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id, **data}, status=status.HTTP_201_CREATED)


urlpatterns = [path("api/v1/requests", FloorView.as_view())]
