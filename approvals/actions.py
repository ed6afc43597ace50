"""State changes of approval requests: one function per change.

Every function here reads the request, judges it, and makes its change with
``approvals.transitions.transition``: one conditional UPDATE on the state it
judged and on the audit head it read, with the audit event and any outbox row
in the same transaction. When two callers race (two reviewers clicking at
once, a decision racing an escalation) exactly one UPDATE wins; the loser's
transaction rolls back and it judges again against what the winner left (an
idempotent repeat, a 409, a 403). Approve votes alone lock the row
(select_for_update): votes toward a quorum must be counted one at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Model, QuerySet
from django.db.models.sql import InsertQuery
from django.utils import timezone

from approvals import audit, escalation, outbox
from approvals.callbacks import check_callback_url
from approvals.canonical import sha256_hex
from approvals.errors import (
    ActionNotAllowed,
    ConditionError,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    Invalid,
    NoPolicy,
    NotVisible,
    PolicyBroken,
)
from approvals.models import (
    Agent,
    ApprovalRequest,
    AuditEvent,
    Notification,
    Ownership,
    RequestId,
    Status,
    Ticket,
    TicketNote,
    Vote,
)
from approvals.outbound import UnsafeURL
from approvals.transitions import append, finish, transition
from policies.durations import iso_instant
from policies.matching import ConditionFailed, route
from policies.models import ActionClass, AnyUser, Calendar, Role, rule_clock
from policies.spec import RuleSpec

logger = logging.getLogger(__name__)

APPROVE, DENY = "approve", "deny"
OUTCOME_STATUS = {APPROVE: Status.APPROVED, DENY: Status.DENIED}


@dataclass(frozen=True)
class Result:
    request: ApprovalRequest
    changed: bool  # False: an idempotent repeat that changed nothing


# --- agents -------------------------------------------------------------------


def create_request(
    agent: Agent, *, body: dict[str, Any], idempotency_key: str | None = None
) -> Result:
    """Route a new request to its policy rule and open level 1.

    1. The agent must be allowed the action (its globs).
    2. No matching rule: fail closed, nothing is stored.
    3. Store the request with the rule's chain copied into it, its first
       owner, the ``created`` audit event and the notification, in one
       transaction (on PostgreSQL one statement).
    4. A known ``Idempotency-Key`` (the unique constraint refuses the INSERT)
       returns the stored request if the body is the same, and is a conflict
       if it is not.
    """
    action = body["action"]
    if not agent.may_request(action):
        raise ActionNotAllowed(f"Agent '{agent.name}' may not request action '{action}'.")
    body_sha256 = sha256_hex(body)
    if body.get("callback_url"):
        try:
            check_callback_url(body["callback_url"])
        except UnsafeURL as exc:
            raise Invalid("callback_url", str(exc)) from None
    # A repeated Idempotency-Key is found when its INSERT hits the unique
    # constraint (below), not by a SELECT before every create; a repeat that
    # no longer routes (the policy changed) still gets its stored request.
    try:
        request = _routed_request(agent, body, idempotency_key, body_sha256)
    except (NoPolicy, ConditionError, PolicyBroken):
        existing = _replay(agent, idempotency_key, body_sha256) if idempotency_key else None
        if existing is None:
            raise
        return Result(existing, changed=False)
    event = audit.created(request, actor={"agent": agent.name})
    try:
        if connection.vendor == "postgresql":
            # One statement is one transaction: no BEGIN and COMMIT round
            # trips (a savepoint only inside a caller's transaction, so that
            # a duplicate key leaves it usable).
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                _insert_created(request, event)
                outbox.set_timer(request)
        else:
            with transaction.atomic():
                request.save(force_insert=True)
                Ownership.objects.create(request=request, role=request.owner_role, level=1)
                event.save(force_insert=True)
                outbox.notify(request, Notification.Kind.NEW)
                outbox.set_timer(request)
    except IntegrityError:
        # The key was used before (or two identical creates raced): the
        # stored request answers, or a conflict if the body differs.
        existing = _replay(agent, idempotency_key, body_sha256) if idempotency_key else None
        if existing is None:
            raise
        return Result(existing, changed=False)
    # A new request has no ticket: say so, so that the answer does not ask.
    ApprovalRequest.ticket.related.set_cached_value(request, None)  # type: ignore[attr-defined]
    return Result(request, changed=True)


def _insert_created(request: ApprovalRequest, event: AuditEvent) -> None:
    """The request, its first ownership, its ``created`` event and the
    notification to its first role, in one statement (one round trip):
    INSERTs chained as data-modifying CTEs, each built by Django's own
    compiler. The foreign keys are deferred (checked at commit), so their
    order within it does not matter; a duplicate Idempotency-Key still
    raises IntegrityError and writes nothing."""
    notification = Notification(
        request=request, kind=Notification.Kind.NEW, role=request.owner_role, level=1
    )
    parts = [
        _insert_sql(request),
        _insert_sql(Ownership(request=request, role=request.owner_role, level=1)),
        _insert_sql(event),
    ]
    last, last_params = _insert_sql(notification)
    sql = "WITH " + ", ".join(f"w{n} AS ({part})" for n, (part, _) in enumerate(parts))
    params = [param for _, part_params in parts for param in part_params]
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} {last} RETURNING id", [*params, *last_params])
        (notification.pk,) = cursor.fetchone()
    for obj in (request, event, notification):
        obj._state.adding, obj._state.db = False, connection.alias
    outbox.notified_soon(notification)


def _insert_sql(obj: Model) -> tuple[str, tuple]:
    """``INSERT INTO … VALUES (…)`` for one unsaved model instance, as its
    ``save(force_insert=True)`` would send it (pre_save defaults included)."""
    meta = obj._meta
    fields = [
        field
        for field in meta.local_concrete_fields
        if not (field.primary_key and getattr(obj, field.attname) is None)  # an identity column
    ]
    query = InsertQuery(type(obj))
    query.insert_values(fields, [obj])
    [(sql, params)] = query.get_compiler(connection=connection).as_sql()
    return sql, tuple(params)


def _routed_request(
    agent: Agent, body: dict[str, Any], idempotency_key: str | None, body_sha256: str
) -> ApprovalRequest:
    """The new request, unsaved: routed, with its rule's chain copied in."""
    requester = body.get("requester") or {}
    try:
        found = route(
            action=body["action"],
            context=body.get("context") or {},
            payload=body.get("payload") or {},
            agent=agent.name,
            requester=requester,
        )
    except ConditionFailed as exc:
        logger.warning("agent %s, action %s: %s", agent.name, body["action"], exc)
        raise ConditionError(
            str(exc),
            policy=exc.policy_name,
            version=exc.version_number,
            rule=exc.rule_name,
            error=exc.error,
        ) from None
    if found is None:
        raise NoPolicy(f"No policy rule matches action '{body['action']}'.")
    rule, first = found.rule, found.rule["levels"][0]
    first_role, calendar, sla, person = _first_level(rule, requester.get("on_behalf_of"))
    if first_role is None:
        logger.error("policy %s names missing role %s", found.policy_name, first["role"])
        raise PolicyBroken(
            f"Policy '{found.policy_name}' routes to role '{first['role']}', which does not exist."
        )
    now = timezone.now()
    request = ApprovalRequest(
        agent=agent,
        idempotency_key=idempotency_key,
        body_sha256=body_sha256,
        action=body["action"],
        summary=body["summary"],
        context=body.get("context") or {},
        payload=body.get("payload") or {},
        requester=requester,
        on_behalf_of_user_id=person,
        callback_url=body.get("callback_url") or agent.callback_url,
        policy_version=found.version,
        **ApprovalRequest.fields_from_rule(rule),
        owner_role=first_role,
        level_started_at=now,
        calendar=calendar,
        sla_seconds=sla,
        created_at=now,
        updated_at=now,
    )
    # Under a calendar, deadlines count its open hours only.
    request.due_at = request.add_time(now, first["deadline"])
    if request.sla_seconds:
        request.sla_due_at = request.add_time(now, request.sla_seconds)
    request.remind_at = request.reminder_before(now, first["deadline"])
    return request


_USER = get_user_model()
_ROLE_FIELDS = Role._meta.concrete_fields
_ROLE_NAMES = [field.attname for field in _ROLE_FIELDS]
# The first level's role, the rule's clock (as policies.models.rule_clock
# finds it: the rule's calendar, else its class's; the class's SLA) and the
# user the request is on behalf of (as ``_person``), in one round trip.
_FIRST_LEVEL_SQL = f"""
    SELECT {", ".join(f'r."{field.column}"' for field in _ROLE_FIELDS)},
        (SELECT c.sla_seconds FROM {ActionClass._meta.db_table} c WHERE c.name = %(class)s),
        (SELECT json_build_object(
                'name', k.name, 'timezone', k.timezone, 'hours', k.hours, 'holidays', k.holidays
            )::text
            FROM {Calendar._meta.db_table} k
            WHERE k.name = COALESCE(%(calendar)s, (
                SELECT kc.name FROM {Calendar._meta.db_table} kc
                JOIN {ActionClass._meta.db_table} c ON c.calendar_id = kc.id
                WHERE c.name = %(class)s))),
        COALESCE(
            (SELECT min(u.id) FROM {_USER._meta.db_table} u
             WHERE u.is_active AND upper(u.username::text) = upper(%(person)s)
             HAVING count(*) = 1),
            (SELECT min(u.id) FROM {_USER._meta.db_table} u
             WHERE u.is_active AND upper(u.email::text) = upper(%(person)s)
             HAVING count(*) = 1))
    FROM {Role._meta.db_table} r WHERE r.name = %(role)s
"""


def _first_level(
    rule: RuleSpec, on_behalf_of: Any
) -> tuple[Role | None, dict | None, int | None, int | None]:
    """(first role, pinned calendar spec, SLA seconds, on_behalf_of user id);
    the role is None when it does not exist."""
    person = on_behalf_of.strip() if isinstance(on_behalf_of, str) else None
    if connection.vendor != "postgresql":
        role = Role.objects.filter(name=rule["levels"][0]["role"]).first()
        calendar, sla = rule_clock(rule)
        user = _person(person)
        return role, calendar.as_spec() if calendar else None, sla, user.pk if user else None
    with connection.cursor() as cursor:
        cursor.execute(
            _FIRST_LEVEL_SQL,
            {
                "role": rule["levels"][0]["role"],
                "class": rule["class"],
                "calendar": rule.get("calendar") or None,
                "person": person or None,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None, None, None, None
    count = len(_ROLE_FIELDS)
    role = Role.from_db(connection.alias, _ROLE_NAMES, row[:count])
    sla, calendar, person_id = row[count:]
    return role, json.loads(calendar) if calendar else None, sla, person_id


def _person(name: str | None) -> User | None:
    """The user a request is on behalf of: by username, else by e-mail, in any
    case; None unless exactly one user answers to it."""
    if not name:
        return None
    users = _USER.objects.filter(is_active=True)
    for field in ("username__iexact", "email__iexact"):
        found = list(users.filter(**{field: name})[:2])
        if len(found) == 1:
            return found[0]
    return None


def _replay(agent: Agent, key: str, body_sha256: str) -> ApprovalRequest | None:
    existing = ApprovalRequest.objects.filter(agent=agent, idempotency_key=key).first()
    if existing is not None and existing.body_sha256 != body_sha256:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different body; "
            "use a new key for a new request."
        )
    return existing


def cancel(request_id: RequestId, *, agent: Agent, reason: str = "") -> ApprovalRequest:
    """The agent withdraws its pending request (not one whose last deadline passed)."""
    _catch_up(request_id)

    def attempt() -> ApprovalRequest:
        request = _get(ApprovalRequest.objects.filter(agent=agent), request_id)
        if request.is_terminal:
            raise Conflict(f"The request is already {request.status}.", request)
        _settle(
            finish(
                request,
                Status.CANCELLED,
                by={"agent": agent.name},
                reason=reason,
                actor={"agent": agent.name},
            )
        )
        return request

    return _until_settled(attempt)


# --- reviewers ----------------------------------------------------------------


def decide(
    request_id: RequestId,
    *,
    reviewer: AnyUser,
    outcome: str,
    reason: str = "",
    payload: dict | None = None,
) -> Result:
    """A reviewer approves or denies.

    1. Only someone whose roles owned the request may see it (else NotVisible).
    2. On a terminal request the same outcome is an idempotent repeat; any
       other is a Conflict; after expiry it is recorded as a late decision.
    3. Only members of the current owning role decide, the claimant alone
       while it is claimed, and the person it was requested for never approves.
    4. A deny needs a reason and ends the request. An approve is a vote; the
       request is approved once ``approvals_required`` distinct reviewers
       approved the same payload.
    """
    if outcome not in OUTCOME_STATUS:
        raise Invalid("outcome", "Choose approve or deny.")
    _catch_up(request_id)

    def attempt() -> Result | None:
        # Votes toward a quorum are counted under the row lock; a deny is one
        # conditional UPDATE like any other change.
        request = _for_reviewer(request_id, reviewer, lock=outcome == APPROVE)
        if request.ended_by_timeout:
            _record_late_decision(request, reviewer, outcome, reason)
            late.append(request)
            return None
        if request.is_terminal:
            if OUTCOME_STATUS[outcome] != request.status:
                raise Conflict(f"The request is already {request.status}.", request)
            return Result(request, changed=False)
        return _decide_pending(request, reviewer, outcome, reason, payload)

    late: list[ApprovalRequest] = []
    result = _until_settled(attempt)
    if result is not None:
        return result
    # Outside the transaction: the late decision above is committed, kept in
    # the audit for the ticket's owners, and the reviewer still gets a 409,
    # whatever the timeout outcome was (even the one they asked for).
    request = late[-1]
    raise Conflict(
        f"Too late: the request ended {request.status} on timeout at "
        f"{iso_instant(request.decided_at)}; your decision is recorded as late.",
        request,
    )


def _decide_pending(
    request: ApprovalRequest, reviewer: AnyUser, outcome: str, reason: str, payload: dict | None
) -> Result:
    blocker = decision_blocker(request, reviewer, outcome=outcome)
    if blocker:
        raise Forbidden(blocker)
    if outcome == APPROVE:
        return _approve(request, reviewer, reason, payload)
    if not reason.strip():
        raise Invalid("reason", "A reason is required to deny.")
    _settle(
        finish(
            request,
            Status.DENIED,
            by={"user": reviewer.get_username(), "role": request.owner_role.name},
            reason=reason,
            actor={"user": reviewer.get_username()},
        )
    )
    return Result(request, changed=True)


def _record_late_decision(
    request: ApprovalRequest, reviewer: AnyUser, outcome: str, reason: str
) -> None:
    append(
        request,
        AuditEvent.Kind.LATE_DECISION,
        actor={"user": reviewer.get_username()},
        data={
            "outcome": outcome,
            "reason": reason,
            "status": request.status,
            "ended_at": iso_instant(request.decided_at),
        },
    )


def _approve(
    request: ApprovalRequest, reviewer: AnyUser, reason: str, payload: dict | None
) -> Result:
    approved = request.payload
    if payload is not None and payload != request.payload:
        if not request.editable:
            raise Invalid("payload", "This rule is not editable; approve the payload as requested.")
        approved = payload
    digest = sha256_hex(approved)
    vote, created = Vote.objects.get_or_create(
        request=request,
        user=reviewer,
        defaults={
            "role": request.owner_role.name,
            "level": request.level,
            "payload_sha256": digest,
            "payload": approved,
        },
    )
    if not created and vote.payload_sha256 == digest:
        return Result(request, changed=False)
    if not created:
        vote.payload_sha256, vote.payload, vote.level = digest, approved, request.level
        vote.role = request.owner_role.name
        vote.save(update_fields=["payload_sha256", "payload", "level", "role"])
    approvers = list(
        request.votes.filter(payload_sha256=digest)
        .order_by("created_at")
        .values_list("user__username", flat=True)
    )
    username = reviewer.get_username()
    if len(approvers) < request.approvals_required:
        append(
            request,
            AuditEvent.Kind.APPROVAL_RECORDED,
            actor={"user": username},
            data={
                "approvals": len(approvers),
                "required": request.approvals_required,
                "payload_sha256": digest,
                "reason": reason,
            },
        )
        return Result(request, changed=True)
    # Under the row lock this cannot lose; _settle keeps it honest if it did.
    _settle(
        finish(
            request,
            Status.APPROVED,
            by={"user": username, "role": request.owner_role.name},
            reason=reason,
            actor={"user": username},
            payload=approved,
            extra={"approvers": approvers} if request.approvals_required > 1 else {},
        )
    )
    return Result(request, changed=True)


def claim(request_id: RequestId, *, reviewer: AnyUser) -> Result:
    """Take a pending request by name: while claimed, only the claimant decides."""
    _catch_up(request_id)

    def attempt() -> Result:
        request = _for_reviewer(request_id, reviewer)
        if request.is_terminal:
            raise Conflict(f"The request is already {request.status}.", request)
        _check_member(request, _role_names(reviewer))
        _check_not_requester(request, reviewer, "claim")
        if request.claimed_by_id == reviewer.pk:
            return Result(request, changed=False)
        if request.claimed_by_id is not None:
            raise Forbidden(f"Claimed by {request.claimant}.")
        now = timezone.now()
        # Past _check_member: a signed-in user row, not AnonymousUser.
        claimant = cast("User", reviewer)
        _settle(
            transition(
                request,
                expect={"status": Status.PENDING, "level": request.level, "claimed_by": None},
                changes={"claimed_by": claimant, "claimed_at": now, "updated_at": now},
                kind=AuditEvent.Kind.CLAIMED,
                actor={"user": reviewer.get_username()},
            )
        )
        return Result(request, changed=True)

    return _until_settled(attempt)


def unclaim(request_id: RequestId, *, reviewer: AnyUser) -> Result:
    def attempt() -> Result:
        request = _for_reviewer(request_id, reviewer)
        if request.claimed_by_id is None:
            return Result(request, changed=False)
        if request.claimed_by_id != reviewer.pk:
            raise Forbidden(f"Claimed by {request.claimant}; only they unclaim.")
        _settle(
            transition(
                request,
                expect={"claimed_by": reviewer.pk},
                changes={"claimed_by": None, "claimed_at": None, "updated_at": timezone.now()},
                kind=AuditEvent.Kind.UNCLAIMED,
                actor={"user": reviewer.get_username()},
            )
        )
        return Result(request, changed=True)

    return _until_settled(attempt)


# --- shared steps ---------------------------------------------------------------


T = TypeVar("T")


class _Lost(Exception):
    """A conditional UPDATE found the state it expected gone."""


def _settle(won: bool) -> None:
    if not won:
        raise _Lost


def _until_settled(attempt: Callable[[], T]) -> T:
    """Run ``attempt`` in a transaction until it is judged against a state
    that holds: when its conditional UPDATE loses (``_Lost``), everything it
    wrote rolls back and it reads and judges again. Each retry follows
    someone else's committed change, so this ends when the races do."""
    while True:
        try:
            with transaction.atomic():
                return attempt()
        except _Lost:
            continue


def _get(queryset: QuerySet[ApprovalRequest], request_id: RequestId) -> ApprovalRequest:
    try:
        return queryset.get(pk=request_id)
    except (ApprovalRequest.DoesNotExist, ValueError, TypeError, ValidationError):
        raise NotVisible("No such request.") from None


def _for_reviewer(
    request_id: RequestId, reviewer: AnyUser, *, lock: bool = False
) -> ApprovalRequest:
    # Read (or lock) the row alone, with no joins: when the row changed while
    # we waited for the lock, PostgreSQL re-checks it against the joined rows
    # it read *before* (e.g. the old owner role) and would drop it as not found.
    rows = ApprovalRequest.objects.all()
    request = _get(rows.select_for_update() if lock else rows, request_id)
    if (
        not ApprovalRequest.objects.filter(pk=request.pk)
        .visible_to(Role.objects.for_user(reviewer))
        .exists()
    ):
        raise NotVisible("No such request.")
    return request


def _catch_up(request_id: RequestId) -> None:
    """Deadlines mean what they say: someone acting after a level's deadline,
    before the engine got to it, first lets the engine's step happen (escalate,
    or time out), and is then judged against the new state.

    Each step commits on its own, so it stands even when the caller's action
    is then refused (the level-1 reviewer gets 403 from an escalated request).
    The step is the engine's own conditional UPDATE: if the sweep (or a timer,
    or another caller) changes the row first, ours updates nothing and we read
    the row again, until it is no longer overdue.
    """
    while True:
        request = _get(ApprovalRequest.objects.all(), request_id)
        if not request.is_overdue(timezone.now()):
            return
        with transaction.atomic():
            escalation.handle_due(request)


def _role_names(reviewer: AnyUser) -> set[str]:
    return set(Role.objects.for_user(reviewer).values_list("name", flat=True))


def _check_member(request: ApprovalRequest, roles: set[str]) -> None:
    if request.owner_role.name not in roles:
        raise Forbidden(_not_member(request))


def _check_not_requester(request: ApprovalRequest, reviewer: AnyUser, verb: str) -> None:
    # Claiming is barred too: a claim would keep colleagues from deciding.
    if request.is_for(reviewer):
        raise Forbidden(_four_eyes(reviewer, verb))


def decision_blocker(
    request: ApprovalRequest,
    user: AnyUser,
    *,
    outcome: str = APPROVE,
    roles: set[str] | None = None,
) -> str | None:
    """Why ``user`` may not decide ``request`` with ``outcome`` now; None if they may.

    The one statement of who decides, used by ``decide`` (which raises it as a
    403) and by the request page (which shows it instead of the buttons):
    members of the current owning role, the claimant alone while it is
    claimed, and never an approve by the person it was requested for (they
    may still deny: withdrawing consent needs no second pair of eyes).
    ``roles`` saves the query when the caller already has the user's roles.
    """
    if request.is_terminal:
        return f"The request is already {request.status}."
    if roles is None:
        roles = _role_names(user)
    if request.owner_role.name not in roles:
        return _not_member(request)
    if request.claimed_by_id is not None and request.claimed_by_id != user.pk:
        return f"Claimed by {request.claimant}; only they may decide."
    if outcome == APPROVE and request.is_for(user):
        return _four_eyes(user, "approve")
    return None


def _not_member(request: ApprovalRequest) -> str:
    return (
        f"Only members of role '{request.owner_role.name}' (level {request.level}) "
        "may act on this request now."
    )


def _four_eyes(user: AnyUser, verb: str) -> str:
    return (
        f"Four eyes: this was requested on behalf of {user.get_username()}, who may not {verb} it."
    )


# --- manual-review tickets -------------------------------------------------------


def add_ticket_note(ticket_id: int, *, reviewer: AnyUser, text: str) -> TicketNote:
    """A member of the ticket's role adds to the story."""
    if not text.strip():
        raise Invalid("text", "Write a note.")
    with transaction.atomic():
        ticket = _ticket_for_member(ticket_id, reviewer)
        author = cast("User", reviewer)  # a member of the ticket's role
        note = TicketNote.objects.create(ticket=ticket, author=author, text=text.strip())
        append(
            ticket.request, AuditEvent.Kind.TICKET_NOTE, actor={"user": reviewer.get_username()},
            data={"ticket": ticket.pk, "note": note.text},
        )  # fmt: skip
    return note


def close_ticket(ticket_id: int, *, reviewer: AnyUser, resolution: str) -> Ticket:
    """Close a manual-review ticket with how it was resolved."""
    if not resolution.strip():
        raise Invalid("resolution", "Say how it was resolved.")
    with transaction.atomic():
        ticket = _ticket_for_member(ticket_id, reviewer)
        if ticket.status == Ticket.State.CLOSED:
            return ticket
        now = timezone.now()
        updated = Ticket.objects.filter(pk=ticket.pk, status=Ticket.State.OPEN).update(
            status=Ticket.State.CLOSED, closed_at=now, closed_by=reviewer,
            resolution=resolution.strip(),
        )  # fmt: skip
        if updated:
            append(
                ticket.request, AuditEvent.Kind.TICKET_CLOSED,
                actor={"user": reviewer.get_username()},
                data={"ticket": ticket.pk, "resolution": resolution.strip()},
            )  # fmt: skip
        ticket.refresh_from_db()
    return ticket


def _ticket_for_member(ticket_id: int, reviewer: AnyUser) -> Ticket:
    try:
        ticket = Ticket.objects.select_related("request", "role").get(pk=ticket_id)
    except (Ticket.DoesNotExist, ValueError, TypeError):
        raise NotVisible("No such ticket.") from None
    if ticket.role.name not in _role_names(reviewer):
        raise NotVisible("No such ticket.")
    return ticket
