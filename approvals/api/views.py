"""The agent and reviewer API: one view per operation, each calling one
domain function from ``approvals.actions``."""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotAuthenticated, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import actions
from approvals.api import longpoll, throttling
from approvals.api.authentication import (
    AgentKeyAuthentication,
    IsAgent,
    ReviewerTokenAuthentication,
)
from approvals.api.serializers import (
    CancelInSerializer,
    ConflictSerializer,
    DecisionInSerializer,
    ErrorSerializer,
    ListQuerySerializer,
    RequestCreateSerializer,
    RequestSerializer,
    WaitQuerySerializer,
)
from approvals.api.throttling import AgentRateThrottle, ReviewerRateThrottle
from approvals.errors import NotVisible
from approvals.models import Agent, ApprovalRequest, Status
from approvals.representation import represent

ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 413, 429)}
LONG_POLL_INTERVAL = 0.25


class AgentAPIView(APIView):
    authentication_classes = [AgentKeyAuthentication]
    permission_classes = [IsAgent]
    throttle_classes = [AgentRateThrottle]


class ReviewerAPIView(APIView):
    authentication_classes = [ReviewerTokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [ReviewerRateThrottle]


def _queryset() -> QuerySet[ApprovalRequest]:
    return ApprovalRequest.objects.select_related(
        "owner_role", "policy_version__policy", "claimed_by", "ticket"
    )


def _agent(request: Request) -> Agent:
    """The calling agent (AgentKeyAuthentication put it in request.auth)."""
    if not isinstance(request.auth, Agent):
        raise NotAuthenticated()
    return request.auth


def _own_request(request: Request, pk: UUID) -> ApprovalRequest:
    try:
        return _queryset().get(pk=pk, agent=_agent(request))
    except (ApprovalRequest.DoesNotExist, ValueError):
        raise NotVisible("No such request.") from None


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> Any:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class RequestPagination(PageNumberPagination):
    page_size = 50


class RequestsView(AgentAPIView):
    @extend_schema(
        operation_id="create_request",
        summary="Ask for an approval",
        request=RequestCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", str, OpenApiParameter.HEADER, description="1-255 characters"
            )
        ],
        responses={
            201: RequestSerializer,
            200: RequestSerializer,
            409: ErrorSerializer,
            422: ErrorSerializer,
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        body = _valid(RequestCreateSerializer, request.data)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 255:
            raise ValidationError({"Idempotency-Key": ["Use 1-255 characters."]})
        result = actions.create_request(_agent(request), body=body, idempotency_key=key)
        return Response(
            represent(result.request),
            status=status.HTTP_201_CREATED if result.changed else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="list_requests",
        summary="The agent's own requests, newest first",
        parameters=[ListQuerySerializer],
        responses={200: RequestSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = _valid(ListQuerySerializer, request.query_params)
        requests = _queryset().filter(agent=_agent(request)).order_by("-created_at", "-pk")
        if "status" in query:
            requests = requests.filter(status=query["status"])
        if "action" in query:
            requests = requests.filter(action=query["action"])
        if "idempotency_key" in query:
            # How an agent that crashed re-attaches without re-sending the body.
            requests = requests.filter(idempotency_key=query["idempotency_key"])
        paginator = RequestPagination()
        page = paginator.paginate_queryset(requests, request, view=self)
        return paginator.get_paginated_response(RequestSerializer(page, many=True).data)


class RequestDetailView(AgentAPIView):
    @extend_schema(
        operation_id="get_request",
        summary="One request; with ?wait=N, held until it is terminal or N seconds pass",
        parameters=[WaitQuerySerializer],
        responses={200: RequestSerializer, **ERRORS},
    )
    def get(self, request: Request, pk: UUID) -> Response:
        wait = _valid(WaitQuerySerializer, request.query_params).get("wait")
        approval = _own_request(request, pk)
        if wait and approval.status == Status.PENDING:
            seconds = min(wait, settings.APPROVALS_MAX_WAIT_SECONDS)
            slot = throttling.hold_wait(_agent(request), seconds)
            scope = getattr(request._request, "scope", None)
            if scope is not None and scope.get("countersign.longpoll") == "first":
                # Under ASGI the wait happens in approvals.api.longpoll, holding
                # no thread; it releases the slot and asks us again.
                scope["countersign.held"], scope["countersign.seconds"] = slot, seconds
            else:
                try:
                    approval = _wait_until_terminal(approval, seconds)
                finally:
                    throttling.release_wait(slot)
        return Response(represent(approval))


def _wait_until_terminal(approval: ApprovalRequest, seconds: int) -> ApprovalRequest:
    """The wait for servers without the ASGI layer (``runserver``, WSGI, the
    test client): it holds this thread, outside any transaction, and wakes on
    the same notification as the ASGI wait (or checks every 250 ms without)."""
    woken = threading.Event()

    def wake(terminal: bool) -> None:
        woken.set()

    notifications = longpoll.Listener.available()
    if notifications:
        longpoll.listener.subscribe(str(approval.pk), wake)
    try:
        deadline = time.monotonic() + seconds
        while approval.status == Status.PENDING and time.monotonic() < deadline:
            polling = not (notifications and longpoll.listener.listening)
            remaining = max(deadline - time.monotonic(), 0)
            woken.wait(min(LONG_POLL_INTERVAL, remaining) if polling else remaining)
            woken.clear()
            current = ApprovalRequest.objects.filter(pk=approval.pk).values_list(
                "status", flat=True
            )
            if current.first() != Status.PENDING:
                approval = _queryset().get(pk=approval.pk)
    finally:
        if notifications:
            longpoll.listener.unsubscribe(str(approval.pk), wake)
    return approval


class CancelView(AgentAPIView):
    @extend_schema(
        operation_id="cancel_request",
        summary="Withdraw a pending request",
        request=CancelInSerializer,
        responses={200: RequestSerializer, 409: ConflictSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: UUID) -> Response:
        body = _valid(CancelInSerializer, request.data or {})
        approval = _own_request(request, pk)
        approval = actions.cancel(approval.pk, agent=_agent(request), reason=body["reason"])
        return Response(represent(approval))


class DecisionView(ReviewerAPIView):
    @extend_schema(
        operation_id="decide",
        summary="Approve or deny (members of the owning role)",
        request=DecisionInSerializer,
        responses={200: RequestSerializer, 409: ConflictSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: UUID) -> Response:
        body = _valid(DecisionInSerializer, request.data)
        result = actions.decide(
            pk,
            reviewer=request.user,
            outcome=body["outcome"],
            reason=body["reason"],
            payload=body.get("payload"),
        )
        return Response(represent(_queryset().get(pk=result.request.pk)))


class ClaimView(ReviewerAPIView):
    @extend_schema(
        operation_id="claim",
        summary="Take a pending request by name",
        request=None,
        responses={200: RequestSerializer, 409: ConflictSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: UUID) -> Response:
        result = actions.claim(pk, reviewer=request.user)
        return Response(represent(_queryset().get(pk=result.request.pk)))


class UnclaimView(ReviewerAPIView):
    @extend_schema(
        operation_id="unclaim",
        summary="Release your claim",
        request=None,
        responses={200: RequestSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: UUID) -> Response:
        result = actions.unclaim(pk, reviewer=request.user)
        return Response(represent(_queryset().get(pk=result.request.pk)))
