"""Input and output shapes of the API. No business rules here: those live in
``approvals.actions``; these only check types and sizes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from approvals.models import Status
from approvals.representation import (
    DecisionSerializer,
    LevelSerializer,
    PolicyRefSerializer,
    RequestSerializer,
    TicketRefSerializer,
)

__all__ = [
    "DecisionSerializer",
    "LevelSerializer",
    "PolicyRefSerializer",
    "RequestSerializer",
    "TicketRefSerializer",
]


class TextOnlyMixin:
    """Refuse numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be text.", code="invalid")
        return super().to_internal_value(data)  # type: ignore[misc]  # a Field's, mixed in


class StrictCharField(TextOnlyMixin, serializers.CharField):
    pass


class StrictRegexField(TextOnlyMixin, serializers.RegexField):
    pass


class StrictURLField(TextOnlyMixin, serializers.URLField):
    pass


class NoUnknownFieldsMixin:
    """Unknown fields are refused: a typo ('contxt') must not silently drop data."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))  # type: ignore[attr-defined]
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)  # type: ignore[misc]  # a Serializer's, mixed in


class RequesterSerializer(serializers.DictField):
    def to_internal_value(self, data: Any) -> Any:
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

    def to_internal_value(self, data: Any) -> Any:
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
