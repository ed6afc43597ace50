"""The audit trail: append-only events, hash-chained per request.

Each event's hash covers its content and the previous event's hash; the
request row keeps the head of its chain. Editing or deleting an event breaks
the chain, which ``manage.py verify_audit`` reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC

from django.utils import timezone

from approvals.canonical import canonical_json
from approvals.models import ApprovalRequest, AuditEvent


def record(
    request: ApprovalRequest, kind: str, *, actor: dict, data: dict | None = None
) -> AuditEvent:
    """Append an event to the request's trail; call inside the transaction of
    the change it records.

    Locking the request row to read its chain head serializes writers of the
    same request: two events can never claim the same predecessor.
    """
    # Lock the request row alone (no joins: a joined row would be locked too,
    # serializing every request routed by the same policy version).
    head = (
        ApprovalRequest.objects.select_for_update()
        .values("audit_seq", "audit_head")
        .get(pk=request.pk)
    )
    event = prepare(
        request, kind, actor=actor, data=data, after=(head["audit_seq"], head["audit_head"])
    )
    event.save(force_insert=True)
    ApprovalRequest.objects.filter(pk=request.pk).update(audit_seq=event.seq, audit_head=event.hash)
    request.audit_seq, request.audit_head = event.seq, event.hash
    return event


def prepare(
    request: ApprovalRequest,
    kind: str,
    *,
    actor: dict,
    data: dict | None = None,
    after: tuple[int, str] | None = None,
    at=None,
) -> AuditEvent:
    """The next event of the chain, hashed but not saved.

    ``after`` is the chain head (seq, hash) it follows, by default the one on
    ``request``. A caller that writes the new head in its own conditional
    UPDATE, guarded by ``audit_seq``, saves a locking read and a write.
    """
    seq, prev_hash = after if after is not None else (request.audit_seq, request.audit_head)
    version = request.policy_version
    event = AuditEvent(
        request_id=request.pk,
        seq=seq + 1,
        kind=kind,
        at=at or timezone.now(),
        actor=actor,
        role=request.owner_role.name,
        level=request.level,
        policy=version.policy.name,
        policy_version=version.number,
        rule=request.rule_name,
        action=request.action,
        summary=request.summary,
        context=request.context,
        data=data or {},
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event)
    return event


def event_hash(event: AuditEvent) -> str:
    content = {
        "request": str(event.request_id),
        "seq": event.seq,
        "kind": event.kind,
        "at": event.at.astimezone(UTC).isoformat(),
        "actor": event.actor,
        "role": event.role,
        "level": event.level,
        "policy": event.policy,
        "policy_version": event.policy_version,
        "rule": event.rule,
        "action": event.action,
        "summary": event.summary,
        "context": event.context,
        "data": event.data,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(canonical_json(content)).hexdigest()


@dataclass(frozen=True)
class Breach:
    request_id: str
    seq: int | None
    problem: str


def verify() -> Iterator[Breach]:
    """Yield every place where a request's audit chain does not hold."""
    requests = ApprovalRequest.objects.order_by("created_at", "id").values_list(
        "id", "audit_seq", "audit_head"
    )
    for request_id, audit_seq, audit_head in requests.iterator(chunk_size=500):
        previous, expected_seq = "", 1
        for event in AuditEvent.objects.filter(request_id=request_id).order_by("seq"):
            if event.seq != expected_seq:
                yield Breach(str(request_id), expected_seq, "event missing from the chain")
                break
            if event.prev_hash != previous:
                yield Breach(str(request_id), event.seq, "does not follow the previous event")
                break
            if event_hash(event) != event.hash:
                yield Breach(str(request_id), event.seq, "content altered after it was written")
                break
            previous, expected_seq = event.hash, expected_seq + 1
        else:
            if (expected_seq - 1, previous) != (audit_seq, audit_head):
                yield Breach(str(request_id), audit_seq, "latest event(s) missing from the chain")
