"""The one idiom by which a request's state changes, and the one way a
pending request becomes terminal.

``transition`` is a conditional UPDATE of the request row on the state its
caller judged (``expect``) and on the head of the audit chain it read
(``audit_seq``); the same statement writes the new head, the event that head
names is inserted next, in the same transaction. Every audited change moves
the head, so the guard on it alone already refuses a row that changed in any
way since it was read; ``expect`` states what the caller's judgment rested on.
When the UPDATE finds the state gone it writes nothing and returns False: the
caller re-reads and judges again. No row lock is taken before it: a caller
waits on another only when their UPDATEs meet on the same row, until the first
one's transaction ends (then PostgreSQL re-checks the WHERE on the new row).

``append`` is the same statement for an event that changes no state (a late
decision, an approval below quorum, a ticket's story): guarded on the head
alone, retried on the new head when it loses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from approvals import audit, outbox, sla
from approvals.canonical import sha256_hex
from approvals.models import ApprovalRequest, AuditEvent, RequestId, Status

# approvals.api.longpoll LISTENs here to wake ?wait=N calls.
TERMINAL_CHANNEL = "countersign_terminal"

CALLBACK_TYPES: dict[str, str] = {
    Status.APPROVED: "approval.approved",
    Status.DENIED: "approval.denied",
    Status.EXPIRED: "approval.expired",
    Status.CANCELLED: "approval.cancelled",
}


def transition(
    request: ApprovalRequest,
    *,
    expect: dict[str, Any],
    changes: dict[str, Any],
    kind: str,
    actor: dict,
    data: dict | None = None,
    at: datetime | None = None,
) -> bool:
    """Change ``request`` by ``changes`` if it still is as ``expect`` says
    and its chain head is still the one on ``request``; write ``kind`` as the
    new head. Returns False, having written nothing, when the state is gone.

    On success ``request`` carries the changes and the new head; on failure it
    is as it was (the caller re-reads it).
    """
    role = changes.get("owner_role", request.owner_role)
    event = audit.prepare(
        request, kind, actor=actor, data=data, at=at,
        role=role.name, level=changes.get("level", request.level),
    )  # fmt: skip
    with transaction.atomic(savepoint=False):
        updated = ApprovalRequest.objects.filter(
            pk=request.pk, audit_seq=request.audit_seq, **expect
        ).update(**changes, audit_seq=event.seq, audit_head=event.hash)
        if updated != 1:
            return False
        for name, value in changes.items():
            setattr(request, name, value)
        request.audit_seq, request.audit_head = event.seq, event.hash
        event.save(force_insert=True)
    return True


def append(
    request: ApprovalRequest, kind: str, *, actor: dict, data: dict | None = None
) -> AuditEvent:
    """Append an event that changes no state, by the same conditional UPDATE
    of the head. A lost race (someone appended first) re-reads the head and
    tries again: the event belongs in the story whatever came before it."""
    with transaction.atomic(savepoint=False):
        while True:
            event = audit.prepare(request, kind, actor=actor, data=data)
            updated = ApprovalRequest.objects.filter(
                pk=request.pk, audit_seq=request.audit_seq
            ).update(audit_seq=event.seq, audit_head=event.hash)
            if updated == 1:
                break
            # Owner and level too: the event records them, and verify_audit
            # checks the last event's against the row.
            request.refresh_from_db(fields=["audit_seq", "audit_head", "level", "owner_role"])
        request.audit_seq, request.audit_head = event.seq, event.hash
        event.save(force_insert=True)
    return event


def finish(
    request: ApprovalRequest,
    status: str,
    *,
    by: dict,
    reason: str,
    actor: dict,
    payload: dict | None = None,
    extra: dict | None = None,
    expect: dict[str, Any] | None = None,
    callback: bool = True,
) -> bool:
    """Make a pending request terminal: ``transition`` on the state the caller
    saw (pending, its level, its chain head, and whatever ``expect`` adds,
    e.g. the deadline for a timeout).

    Returns False when that state is gone: someone else changed it first, and
    nothing was written. Otherwise writes the audit event, counts the outcome
    and (unless the caller will, after adding to the story) queues the
    callback, all in the caller's transaction.
    """
    now = timezone.now()
    fields = terminal_changes(request, status, by=by, reason=reason, payload=payload, now=now)
    data = terminal_data(fields, extra)
    with transaction.atomic(savepoint=False):
        if not transition(
            request,
            expect={"status": Status.PENDING, "level": request.level, **(expect or {})},
            changes=fields,
            kind=AuditEvent.Kind(status),
            actor=actor,
            data=data,
            at=now,
        ):
            return False
        sla.record(request, status, by)
        # Wakes the agent's ?wait=N at commit, in every web process (not on rollback).
        notify_terminal(request.pk)
        if status in (Status.DENIED, Status.EXPIRED):
            outbox.notify_requester(request)
        if callback:
            queue_terminal_callback(request)
    return True


def terminal_changes(
    request: ApprovalRequest,
    status: str,
    *,
    by: dict,
    reason: str,
    payload: dict | None,
    now: datetime,
) -> dict[str, Any]:
    """What ending ``request`` as ``status`` writes on its row (``finish``,
    and the sweep's set-based timeouts)."""
    return {
        "status": status,
        "due_at": None,
        "remind_at": None,
        "decided_at": now,
        "decided_by": by,
        "decision_reason": reason,
        "decision_payload": payload,
        "decision_payload_sha256": sha256_hex(payload) if payload is not None else "",
        "decision_edited": payload is not None and payload != request.payload,
        "claimed_by": None,
        "claimed_at": None,
        "updated_at": now,
        **sla.decision_fields(request, status, by, now),
    }


def terminal_data(changes: dict[str, Any], extra: dict | None = None) -> dict:
    """The outcome event's data for ``terminal_changes``."""
    data = {
        "outcome": changes["status"],
        "by": changes["decided_by"],
        "reason": changes["decision_reason"],
        **(extra or {}),
    }
    if changes["decision_payload"] is not None:
        data["payload_sha256"] = changes["decision_payload_sha256"]
        data["edited"] = changes["decision_edited"]
    return data


def notify_terminal_many(request_ids: list[RequestId]) -> None:
    """``notify_terminal`` for many requests, in one statement."""
    if connection.vendor == "postgresql" and request_ids:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, id) FROM unnest(%s::text[]) AS id",
                [TERMINAL_CHANNEL, [str(pk) for pk in request_ids]],
            )


def queue_terminal_callback(request: ApprovalRequest) -> None:
    outbox.queue_callback(request, CALLBACK_TYPES[request.status])


def notify_terminal(request_id: RequestId) -> None:
    """Inside the transaction that makes a request terminal: PostgreSQL
    delivers the notification at commit, and drops it on rollback."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [TERMINAL_CHANNEL, str(request_id)])
