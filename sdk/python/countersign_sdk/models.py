"""The API's resources as typed, immutable objects. Field names follow the
server's schema (``/api/v1/schema``); ``class`` is ``class_`` here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from countersign_sdk._canonical import sha256_hex
from countersign_sdk.errors import (
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalError,
    ApprovalExpired,
    PayloadMismatchError,
)

TERMINAL = frozenset({"approved", "denied", "expired", "cancelled"})


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class PolicyRef:
    name: str
    version: int
    rule: str


@dataclass(frozen=True)
class Level:
    role: str
    deadline: str  # ISO 8601 duration, e.g. "PT30M"


@dataclass(frozen=True)
class Ticket:
    id: str
    status: str  # "open" | "closed"


@dataclass(frozen=True)
class Decision:
    outcome: str  # approved | denied | expired | cancelled
    by: dict[str, Any]
    reason: str
    payload: dict[str, Any] | None
    payload_sha256: str
    edited: bool
    at: datetime | None

    def verify(self) -> bool:
        """Recompute ``payload_sha256`` over the payload; True, or PayloadMismatchError.

        Run this before executing: it proves you run exactly what was approved.
        """
        if self.payload is None:
            raise PayloadMismatchError(f"the {self.outcome} decision carries no payload")
        actual = sha256_hex(self.payload)
        if actual != self.payload_sha256:
            raise PayloadMismatchError(
                f"payload hashes to {actual}, the decision says {self.payload_sha256}"
            )
        return True

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        return cls(
            outcome=data["outcome"],
            by=dict(data.get("by") or {}),
            reason=data.get("reason") or "",
            payload=data.get("payload"),
            payload_sha256=data.get("payload_sha256") or "",
            edited=bool(data.get("edited")),
            at=_time(data.get("at")),
        )


@dataclass(frozen=True)
class ApprovalRequest:
    id: str
    action: str
    summary: str
    context: dict[str, Any]
    payload: dict[str, Any]
    requester: dict[str, Any]
    status: str  # pending | approved | denied | expired | cancelled
    policy: PolicyRef
    class_: str
    level: int
    owner_role: str
    due_at: datetime | None
    levels: list[Level]
    on_timeout: str
    claimed_by: str | None
    decision: Decision | None
    ticket: Ticket | None
    created_at: datetime | None
    updated_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def raise_for_outcome(self) -> ApprovalRequest:
        """Return self if approved; raise ApprovalDenied, ApprovalExpired or
        ApprovalCancelled otherwise (a pending request is returned as it is)."""
        error = OUTCOME_ERRORS.get(self.status)
        if error is not None:
            raise error(self)
        return self

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApprovalRequest:
        policy = data.get("policy") or {}
        ticket = data.get("ticket")
        decision = data.get("decision")
        return cls(
            id=str(data["id"]),
            action=data["action"],
            summary=data.get("summary", ""),
            context=dict(data.get("context") or {}),
            payload=dict(data.get("payload") or {}),
            requester=dict(data.get("requester") or {}),
            status=data["status"],
            policy=PolicyRef(
                name=policy.get("name", ""),
                version=int(policy.get("version") or 0),
                rule=policy.get("rule", ""),
            ),
            class_=data.get("class", ""),
            level=int(data.get("level") or 0),
            owner_role=data.get("owner_role", ""),
            due_at=_time(data.get("due_at")),
            levels=[
                Level(role=lv["role"], deadline=lv["deadline"]) for lv in data.get("levels", [])
            ],
            on_timeout=data.get("on_timeout", ""),
            claimed_by=data.get("claimed_by"),
            decision=Decision.from_json(decision) if decision else None,
            ticket=Ticket(id=str(ticket["id"]), status=ticket["status"]) if ticket else None,
            created_at=_time(data.get("created_at")),
            updated_at=_time(data.get("updated_at")),
            raw=data,
        )


@dataclass(frozen=True)
class Page:
    """One page of ``requests.list``: ``results`` newest first."""

    count: int
    next: str | None
    previous: str | None
    results: list[ApprovalRequest]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Page:
        return cls(
            count=int(data.get("count") or 0),
            next=data.get("next"),
            previous=data.get("previous"),
            results=[ApprovalRequest.from_json(item) for item in data.get("results", [])],
        )


@dataclass(frozen=True)
class WebhookEvent:
    """A verified callback: ``type`` like ``approval.approved``, ``request`` its resource."""

    id: str  # the webhook-id: the same on every retry of this event
    type: str
    timestamp: datetime | None
    request: ApprovalRequest
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


OUTCOME_ERRORS: dict[str, type[ApprovalError]] = {
    "denied": ApprovalDenied,
    "expired": ApprovalExpired,
    "cancelled": ApprovalCancelled,
}
