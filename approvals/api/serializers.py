"""Input and output shapes of the API. No business rules here: those live in
``approvals.actions``; these only check types and sizes."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals.models import ApprovalRequest, Status
from policies.durations import iso_duration


class TextOnlyMixin:
    """Refuse numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be text.", code="invalid")
        return super().to_internal_value(data)


class StrictCharField(TextOnlyMixin, serializers.CharField):
    pass


class StrictRegexField(TextOnlyMixin, serializers.RegexField):
    pass


class StrictURLField(TextOnlyMixin, serializers.URLField):
    pass


class NoUnknownFieldsMixin:
    """Unknown fields are refused: a typo ('contxt') must not silently drop data."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class RequesterSerializer(serializers.DictField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        on_behalf_of = value.get("on_behalf_of")
        if on_behalf_of is not None and not isinstance(on_behalf_of, str):
            raise serializers.ValidationError({"on_behalf_of": ["Must be a username (text)."]})
        return value


class RequestCreateSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    action = StrictRegexField(
        r"^[a-z0-9_.:-]{1,100}$",
        max_length=100,
        error_messages={"invalid": "Use 1-100 characters of a-z 0-9 _ . : -"},
    )
    summary = StrictCharField(min_length=1, max_length=500)
    # DRF's metaclass moves declared fields off the class, so "context" does
    # not shadow Serializer.context at run time; the type stubs cannot know.
    context = serializers.DictField(required=False, default=dict)  # type: ignore[assignment]
    payload = serializers.DictField(required=False, default=dict)
    callback_url = StrictURLField(required=False, max_length=2000)
    requester = RequesterSerializer(required=False, default=dict)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["Send a JSON object."]}, code="invalid"
            )
        return super().to_internal_value(data)


class DecisionInSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    outcome = serializers.ChoiceField(choices=["approve", "deny"])
    reason = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")
    payload = serializers.DictField(required=False)


class CancelInSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")


class ListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    action = serializers.CharField(required=False, max_length=100)
    idempotency_key = serializers.CharField(
        required=False,
        min_length=1,
        max_length=255,
        help_text="The request created with this Idempotency-Key, if any (zero or one result)",
    )
    page = serializers.IntegerField(required=False, min_value=1)


class WaitQuerySerializer(serializers.Serializer):
    wait = serializers.IntegerField(required=False, min_value=1, max_value=60)


# --- the request resource ---------------------------------------------------------


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

    def get_fields(self):
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
        return DecisionSerializer(request).data if request.is_terminal else None

    @extend_schema_field(TicketRefSerializer(allow_null=True))
    def get_ticket(self, request: ApprovalRequest) -> dict | None:
        try:
            ticket = request.ticket
        except ObjectDoesNotExist:
            return None
        return {"id": str(ticket.pk), "status": ticket.status}


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False
    )


class ConflictSerializer(RequestSerializer):
    """409: the request as it stands, with the error's code and detail."""

    code = serializers.CharField()
    detail = serializers.CharField()
