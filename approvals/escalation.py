"""Deadlines that fire: escalation to the next level, the terminal outcome
after the last one, and reminders.

The database is the source of truth: the sweep finds due requests through a
partial index and hands each to a small step that changes it by the one idiom
of approvals.transitions: a conditional UPDATE on (id, status, level, due_at,
audit_seq) that also writes the new audit head. Two workers, two beats started
by mistake, a task delivered twice or a reviewer deciding in the same
millisecond: exactly one of them changes the row, the others update nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from approvals import outbox
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    Notification,
    Ownership,
    RequestId,
    Status,
    Ticket,
)
from approvals.transitions import append, finish, queue_terminal_callback, transition
from policies.durations import iso_instant
from policies.models import Role
from policies.spec import OnTimeout

logger = logging.getLogger(__name__)

SYSTEM = {"system": "timeout"}
ESCALATION_ACTOR = {"system": "escalation"}
RETRY_BAD_ROW_AFTER = timedelta(seconds=30)


@dataclass(frozen=True)
class SweepResult:
    escalated: int = 0
    finished: int = 0
    reminded: int = 0
    failed: int = 0


def sweep(*, batch: int = 500, chunk: int = 50, now: datetime | None = None) -> SweepResult:
    """Handle every request that is due now.

    1. Load a batch of due rows, oldest deadline first (the partial index).
    2. Handle them in transactions of ``chunk`` rows, each row in a savepoint
       of its own: one commit (one WAL flush) per chunk instead of per row,
       while a row that raises rolls back alone, is logged and has its
       deadline pushed back a little, so it never blocks the others.
    3. Each row's change is a conditional UPDATE on the state we loaded; a row
       another process handled in the meantime updates nothing.
    4. Repeat until no due rows are left; then send the due reminders.
    """
    counts = {"escalated": 0, "finished": 0, "reminded": 0, "failed": 0}
    roles = {role.name: role for role in Role.objects.all()}
    while True:
        due = list(
            ApprovalRequest.objects.due(now or timezone.now())
            .select_related("owner_role", "policy_version__policy", "agent")
            .order_by("due_at")[:batch]
        )
        for start in range(0, len(due), chunk):
            with transaction.atomic():
                for request in due[start : start + chunk]:
                    outcome = _handle_safely(request, roles)
                    if outcome:
                        counts[outcome] += 1
        if len(due) < batch:
            break
    for request_id, remind_at in ApprovalRequest.objects.reminder_due(now).values_list(
        "id", "remind_at"
    )[:batch]:
        if remind_at is None:  # the query excludes it; this tells the type checker
            continue
        try:
            counts["reminded"] += remind(request_id, remind_at=remind_at)
        except Exception:
            logger.exception("request %s: reminder failed", request_id)
            counts["failed"] += 1
    return SweepResult(**counts)


def fire(request_id: RequestId, *, level: int, due_at: datetime) -> str | None:
    """A precise timer went off for one deadline: handle it now if it is
    still the request's deadline (the sweep may have been first)."""
    request = (
        ApprovalRequest.objects.due()
        .select_related("owner_role", "policy_version__policy", "agent")
        .filter(pk=request_id, level=level, due_at=due_at)
        .first()
    )
    if request is None:
        return None
    return _handle_safely(request, {})


def due_soon(within: timedelta) -> list[tuple[RequestId, int, datetime]]:
    """(id, level, due_at) of the pending requests due in the next ``within``,
    for which to set precise timers."""
    now = timezone.now()
    soon = (
        ApprovalRequest.objects.filter(
            status=Status.PENDING, due_at__gt=now, due_at__lte=now + within
        )
        .order_by("due_at")
        .values_list("id", "level", "due_at")[:5000]
    )
    # due_at is never None here (the filter); this tells the type checker.
    return [(pk, level, due_at) for pk, level, due_at in soon if due_at is not None]


def _handle_safely(request: ApprovalRequest, roles: dict[str, Role]) -> str | None:
    level, due_at = request.level, request.deadline
    try:
        with transaction.atomic():
            return handle_due(request, roles)
    except Exception:
        logger.exception("request %s: deadline handling failed; retrying later", request.pk)
        with transaction.atomic():
            _push_back(request.pk, level, due_at)
        return "failed"


def handle_due(request: ApprovalRequest, roles: dict[str, Role] | None = None) -> str | None:
    """Escalate, or end a request whose last deadline passed; None if it had
    already moved on (decided, escalated by someone else)."""
    if request.is_last_level:
        return "finished" if time_out(request) else None
    return "escalated" if escalate(request, roles) else None


def escalate(request: ApprovalRequest, roles: dict[str, Role] | None = None) -> bool:
    """Hand the request to the next level's role, with a fresh deadline.

    The previous role keeps read access (its Ownership row) but loses the
    right to decide; any claim ends; the new role is notified.

    One ``transition`` on (status, level, due_at, audit_seq): a decision or a
    claim that slipped in since we read the row makes it update nothing (the
    next sweep, or the caller's re-read, judges the new state).
    """
    now = timezone.now()
    was_due, from_role, was_level = request.deadline, request.owner_role, request.level
    step = request.levels[was_level]
    to_role = (roles or {}).get(step["role"]) or Role.objects.get(name=step["role"])
    due_at = request.add_time(now, step["deadline"])  # open hours only, under a calendar
    # No savepoint of its own: inside the sweep, the row's savepoint already
    # isolates it; called alone, this still opens a transaction.
    with transaction.atomic(savepoint=False):
        if not transition(
            request,
            expect={"status": Status.PENDING, "level": was_level, "due_at": was_due},
            changes={
                "level": was_level + 1,
                "owner_role": to_role,
                "level_started_at": now,
                "due_at": due_at,
                "remind_at": request.reminder_before(now, step["deadline"]),
                "claimed_by": None,
                "claimed_at": None,
                "updated_at": now,
            },
            kind=AuditEvent.Kind.ESCALATED,
            actor=ESCALATION_ACTOR,
            at=now,
            data=_escalated_data(from_role, to_role, was_level, was_due, due_at, now),
        ):
            return False
        Ownership.objects.create(request=request, role=to_role, level=request.level)
        outbox.notify(request, Notification.Kind.ESCALATED)
        outbox.set_timer(request)
        if request.agent.subscribe_escalations:
            outbox.queue_callback(request, "approval.escalated")
    logger.info(
        "request %s escalated from %s to %s, %.1fs after its deadline",
        request.pk, from_role.name, to_role.name, (now - was_due).total_seconds(),
    )  # fmt: skip
    return True


def _escalated_data(
    from_role: Role, to_role: Role, was_level: int, was_due: datetime, due_at: datetime,
    now: datetime,
) -> dict:  # fmt: skip
    return {
        "from_role": from_role.name,
        "to_role": to_role.name,
        "from_level": was_level,
        "to_level": was_level + 1,
        "was_due_at": iso_instant(was_due),
        "late_seconds": round((now - was_due).total_seconds(), 3),
        "due_at": iso_instant(due_at),
    }


def time_out(request: ApprovalRequest) -> bool:
    """The last deadline passed: the rule's on_timeout outcome, and a ticket
    for manual review where the rule asks for one."""
    status = Status(OnTimeout(request.on_timeout).status)
    if status == Status.APPROVED and not request.fail_open:
        status = Status.EXPIRED  # validation forbids this; never approve on silence by accident
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        done = finish(
            request,
            status,
            by=SYSTEM,
            reason=f"No decision before the level {request.level} deadline.",
            actor=SYSTEM,
            payload=request.payload if status == Status.APPROVED else None,
            extra={"late_seconds": round((now - request.deadline).total_seconds(), 3)},
            expect={"due_at": request.deadline},
            callback=False,  # below, once the ticket exists: the agent is told it is open
        )
        if not done:
            return False
        if request.ticket_on_timeout:
            ticket = Ticket.objects.create(request=request, role=request.owner_role)
            append(
                request,
                AuditEvent.Kind.TICKET_OPENED,
                actor=SYSTEM,
                data={"ticket": ticket.pk, "role": ticket.role.name},
            )
            outbox.notify(request, Notification.Kind.TICKET, role=ticket.role)
        queue_terminal_callback(request)
    logger.info("request %s ended %s on timeout", request.pk, status)
    return True


def remind(request_id: RequestId, *, remind_at: datetime) -> int:
    """Remind the owning role once, ``remind`` before the level's deadline:
    a ``transition`` on (pending, remind_at), retried on the new state while
    the reminder is still due (a claim may have moved the chain head)."""
    while True:
        request = (
            ApprovalRequest.objects.select_related("owner_role", "policy_version__policy")
            .filter(pk=request_id, status=Status.PENDING, remind_at=remind_at)
            .first()
        )
        if request is None:
            return 0
        with transaction.atomic():
            if transition(
                request,
                expect={"status": Status.PENDING, "remind_at": remind_at},
                changes={"remind_at": None},
                kind=AuditEvent.Kind.REMINDED,
                actor={"system": "reminder"},
                data={"due_at": iso_instant(request.due_at)},
            ):
                outbox.notify(request, Notification.Kind.REMINDER)
                return 1


def _push_back(request_id: RequestId, level: int, due_at: datetime) -> None:
    # From now, not from the old deadline: the row must leave this sweep's
    # view, or a backlog of failing rows would be fetched again and again.
    ApprovalRequest.objects.filter(
        pk=request_id, status=Status.PENDING, level=level, due_at=due_at
    ).update(due_at=timezone.now() + RETRY_BAD_ROW_AFTER)
