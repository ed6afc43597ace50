"""Deadlines that fire: escalation to the next level, the terminal outcome
after the last one, and reminders.

The database is the source of truth: the sweep finds due requests through a
partial index and hands each to a small step that claims it by a conditional
UPDATE on (id, status, level, due_at). Two workers, two beats started by
mistake, a task delivered twice or a reviewer deciding in the same
millisecond: exactly one of them changes the row, the others update nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from approvals import audit, outbox
from approvals.models import (
    ApprovalRequest,
    Notification,
    Ownership,
    Status,
    Ticket,
)
from approvals.transitions import finish
from policies.models import Role

logger = logging.getLogger(__name__)

SYSTEM = {"system": "timeout"}
TIMEOUT_STATUS = {"expire": Status.EXPIRED, "deny": Status.DENIED, "approve": Status.APPROVED}
RETRY_BAD_ROW_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class SweepResult:
    escalated: int = 0
    finished: int = 0
    reminded: int = 0
    failed: int = 0


def sweep(*, batch: int = 500, now: datetime | None = None) -> SweepResult:
    """Handle every request that is due now, a row at a time.

    1. Take a batch of due rows (id, level, due_at), oldest deadline first.
    2. Handle each in its own transaction; a row another process handled in
       the meantime updates nothing and is skipped.
    3. A row that raises is logged and its deadline pushed back a little, so
       it is retried later and never blocks the others.
    4. Repeat until no due rows are left; then send the due reminders.
    """
    counts = {"escalated": 0, "finished": 0, "reminded": 0, "failed": 0}
    while True:
        now_ = now or timezone.now()
        due = list(
            ApprovalRequest.objects.due(now_)
            .order_by("due_at")
            .values_list("id", "level", "due_at")[:batch]
        )
        for request_id, level, due_at in due:
            try:
                outcome = handle_due(request_id, level=level, due_at=due_at)
            except Exception:
                logger.exception("request %s: deadline handling failed; retrying later", request_id)
                _push_back(request_id, level, due_at)
                counts["failed"] += 1
                continue
            if outcome:
                counts[outcome] += 1
        if len(due) < batch:
            break
    for request_id, remind_at in ApprovalRequest.objects.reminder_due(now).values_list(
        "id", "remind_at"
    )[:batch]:
        try:
            counts["reminded"] += remind(request_id, remind_at=remind_at)
        except Exception:
            logger.exception("request %s: reminder failed", request_id)
            counts["failed"] += 1
    return SweepResult(**counts)


def handle_due(request_id, *, level: int, due_at: datetime) -> str | None:
    """Escalate, or end a request whose last deadline passed; None if it had
    already moved on (decided, escalated by someone else)."""
    request = (
        ApprovalRequest.objects.select_related("owner_role", "policy_version__policy", "agent")
        .filter(pk=request_id, status=Status.PENDING, level=level, due_at=due_at)
        .first()
    )
    if request is None:
        return None
    if request.is_last_level:
        return "finished" if time_out(request) else None
    return "escalated" if escalate(request) else None


def escalate(request: ApprovalRequest) -> bool:
    """Hand the request to the next level's role, with a fresh deadline.

    The previous role keeps read access (its Ownership row) but loses the
    right to decide; any claim ends; the new role is notified.
    """
    now = timezone.now()
    was_due, from_role = request.due_at, request.owner_role
    next_level = request.level + 1
    step = request.levels[next_level - 1]
    to_role = Role.objects.get(name=step["role"])
    due_at = now + timedelta(seconds=step["deadline"])
    with transaction.atomic():
        updated = ApprovalRequest.objects.filter(
            pk=request.pk, status=Status.PENDING, level=request.level, due_at=was_due
        ).update(
            level=next_level,
            owner_role=to_role,
            level_started_at=now,
            due_at=due_at,
            remind_at=_remind_at(request, due_at, step["deadline"]),
            claimed_by=None,
            claimed_at=None,
            updated_at=now,
        )
        if updated != 1:
            return False
        request.refresh_from_db()
        Ownership.objects.create(request=request, role=to_role, level=next_level)
        audit.record(
            request,
            "escalated",
            actor={"system": "escalation"},
            data={
                "from_role": from_role.name,
                "to_role": to_role.name,
                "from_level": next_level - 1,
                "to_level": next_level,
                "was_due_at": _iso(was_due),
                "late_seconds": round((now - was_due).total_seconds(), 3),
                "due_at": _iso(due_at),
            },
        )
        outbox.notify(request, Notification.Kind.ESCALATED)
        if request.agent.subscribe_escalations:
            outbox.queue_callback(request, "approval.escalated")
    logger.info(
        "request %s escalated from %s to %s, %.1fs after its deadline",
        request.pk, from_role.name, to_role.name, (now - was_due).total_seconds(),
    )  # fmt: skip
    return True


def time_out(request: ApprovalRequest) -> bool:
    """The last deadline passed: the rule's on_timeout outcome, and a ticket
    for manual review where the rule asks for one."""
    status = TIMEOUT_STATUS[request.on_timeout]
    if status == Status.APPROVED and not request.fail_open:
        status = Status.EXPIRED  # validation forbids this; never approve on silence by accident
    now = timezone.now()
    with transaction.atomic():
        done = finish(
            request,
            status,
            by=SYSTEM,
            reason=f"No decision before the level {request.level} deadline.",
            actor=SYSTEM,
            payload=request.payload if status == Status.APPROVED else None,
            extra={"late_seconds": round((now - request.due_at).total_seconds(), 3)},
            due_at=request.due_at,
        )
        if not done:
            return False
        if request.ticket_on_timeout:
            ticket = Ticket.objects.create(request=request, role=request.owner_role)
            audit.record(
                request,
                "ticket_opened",
                actor=SYSTEM,
                data={"ticket": ticket.pk, "role": ticket.role.name},
            )
            outbox.notify(request, Notification.Kind.TICKET, role=ticket.role)
    logger.info("request %s ended %s on timeout", request.pk, status)
    return True


def remind(request_id, *, remind_at: datetime) -> int:
    """Remind the owning role once, ``remind`` before the level's deadline."""
    with transaction.atomic():
        updated = ApprovalRequest.objects.filter(
            pk=request_id, status=Status.PENDING, remind_at=remind_at
        ).update(remind_at=None)
        if updated != 1:
            return 0
        request = ApprovalRequest.objects.select_related("owner_role").get(pk=request_id)
        audit.record(
            request, "reminded", actor={"system": "reminder"}, data={"due_at": _iso(request.due_at)}
        )
        outbox.notify(request, Notification.Kind.REMINDER)
    return 1


def _remind_at(request: ApprovalRequest, due_at: datetime, deadline: int):
    if request.remind_seconds and request.remind_seconds < deadline:
        return due_at - timedelta(seconds=request.remind_seconds)
    return None


def _push_back(request_id, level: int, due_at: datetime) -> None:
    # From now, not from the old deadline: the row must leave this sweep's
    # view, or a backlog of failing rows would be fetched again and again.
    ApprovalRequest.objects.filter(
        pk=request_id, status=Status.PENDING, level=level, due_at=due_at
    ).update(due_at=timezone.now() + RETRY_BAD_ROW_AFTER)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
