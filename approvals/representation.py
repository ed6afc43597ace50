"""The request resource as the API answers it and callbacks carry it
(README, "API"): one representation, used by the API's views and by
``approvals.outbox`` when it queues a callback."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals.models import ApprovalRequest, Status
from policies.durations import iso_duration


class PolicyRefSerializer(serializers.Serializer):
    name = serializers.CharField(source="policy_version.policy.name")
    version = serializers.IntegerField(source="policy_version.number")
    rule = serializers.CharField(source="rule_name")


class LevelSerializer(serializers.Serializer):
    role = serializers.CharField()
    deadline = serializers.SerializerMethodField(help_text="ISO 8601 duration, e.g. PT30M")

    def get_deadline(self, level: dict) -> str:
        return iso_duration(level["deadline"])


class DecisionSerializer(serializers.Serializer):
    outcome = serializers.CharField(source="status")
    by = serializers.DictField(
        source="decided_by",
        help_text='{"user", "role"} or {"system": "timeout"} or {"agent": name}',
    )
    reason = serializers.CharField(source="decision_reason")
    payload = serializers.DictField(source="decision_payload", allow_null=True)
    payload_sha256 = serializers.CharField(
        source="decision_payload_sha256",
        help_text="SHA-256 of the approved payload in canonical JSON",
    )
    edited = serializers.BooleanField(source="decision_edited")
    at = serializers.DateTimeField(source="decided_at")


class TicketRefSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=["open", "closed"])


class RequestSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    action = serializers.CharField()
    summary = serializers.CharField()
    context = serializers.DictField()  # type: ignore[assignment]
    payload = serializers.DictField()
    requester = serializers.DictField()
    status = serializers.ChoiceField(choices=Status.choices)
    policy = PolicyRefSerializer(source="*")
    level = serializers.IntegerField()
    owner_role = serializers.CharField(source="owner_role.name")
    due_at = serializers.DateTimeField(allow_null=True)
    levels = LevelSerializer(many=True)
    on_timeout = serializers.CharField()
    claimed_by = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    ticket = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "class" is a Python keyword, so it cannot be declared as an attribute.
        ordered = {}
        for name, field in fields.items():
            ordered[name] = field
            if name == "policy":
                ordered["class"] = serializers.CharField(source="action_class")
        return ordered

    def get_claimed_by(self, request: ApprovalRequest) -> str | None:
        return request.claimed_by.get_username() if request.claimed_by else None

    @extend_schema_field(DecisionSerializer(allow_null=True))
    def get_decision(self, request: ApprovalRequest) -> dict | None:
        if not request.is_terminal:
            return None
        return _shared(DecisionSerializer).to_representation(request)

    @extend_schema_field(TicketRefSerializer(allow_null=True))
    def get_ticket(self, request: ApprovalRequest) -> dict | None:
        try:
            ticket = request.ticket
        except ObjectDoesNotExist:
            return None
        return {"id": str(ticket.pk), "status": ticket.status}


def represent(request: ApprovalRequest) -> dict:
    """``RequestSerializer(request).data``, minus the cost of building the
    serializer: DRF deep-copies every declared field for each serializer
    instance, which was most of the 2-3 ms one representation took (every
    answer of the API, every callback's body). The fields of one shared
    instance hold no state of a call, so every thread may use them."""
    return _shared(RequestSerializer).to_representation(request)


_SHARED: dict[type, serializers.Serializer] = {}


def _shared(kind: type[serializers.Serializer]) -> serializers.Serializer:
    serializer = _SHARED.get(kind)
    if serializer is None:
        serializer = kind()
        # Built once, here, nested ones too, before any thread shares them.
        for field in serializer.fields.values():
            nested = getattr(field, "child", field)
            if isinstance(nested, serializers.Serializer):
                nested.fields  # noqa: B018
        serializer = _SHARED.setdefault(kind, serializer)
    return serializer
