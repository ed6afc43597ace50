"""The one way a pending request becomes terminal, shared by reviewers,
agents and the escalation engine."""

from __future__ import annotations

from datetime import datetime

from django.db import connection
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


def finish(
    request: ApprovalRequest,
    status: str,
    *,
    by: dict,
    reason: str,
    actor: dict,
    payload: dict | None = None,
    extra: dict | None = None,
    due_at: datetime | None = None,
    callback: bool = True,
) -> bool:
    """Make a pending request terminal with one conditional UPDATE on the
    state the caller saw (status, level and, for timeouts, the deadline).

    Returns False when that state is gone: someone else changed it first, and
    nothing was written. Otherwise writes the audit event and (unless the
    caller will, after adding to the story) queues the callback, all in the
    caller's transaction.
    """
    now = timezone.now()
    fields = {
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
    expected = {"pk": request.pk, "status": Status.PENDING, "level": request.level}
    if due_at is not None:
        expected["due_at"] = due_at
    if ApprovalRequest.objects.filter(**expected).update(**fields) != 1:
        return False
    for name, value in fields.items():
        setattr(request, name, value)
    sla.record(request, status, by)
    data = {"outcome": status, "by": by, "reason": reason, **(extra or {})}
    if payload is not None:
        data["payload_sha256"] = fields["decision_payload_sha256"]
        data["edited"] = fields["decision_edited"]
    audit.record(request, AuditEvent.Kind(status), actor=actor, data=data)
    # Wakes the agent's ?wait=N at commit, in every web process (not on rollback).
    notify_terminal(request.pk)
    if status in (Status.DENIED, Status.EXPIRED):
        outbox.notify_requester(request)
    if callback:
        queue_terminal_callback(request)
    return True


def queue_terminal_callback(request: ApprovalRequest) -> None:
    outbox.queue_callback(request, CALLBACK_TYPES[request.status])


def notify_terminal(request_id: RequestId) -> None:
    """Inside the transaction that makes a request terminal: PostgreSQL
    delivers the notification at commit, and drops it on rollback."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [TERMINAL_CHANNEL, str(request_id)])
