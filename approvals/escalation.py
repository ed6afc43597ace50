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

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from django.db import connection, models, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from approvals import audit, outbox, sla
from approvals.models import (
    Agent,
    ApprovalRequest,
    AuditEvent,
    Notification,
    Ownership,
    RequestId,
    Status,
    Ticket,
)
from approvals.transitions import (
    CALLBACK_TYPES,
    append,
    finish,
    notify_terminal_many,
    queue_terminal_callback,
    terminal_changes,
    terminal_data,
    transition,
)
from policies.durations import iso_instant
from policies.models import PolicyVersion, Role
from policies.spec import OnTimeout

logger = logging.getLogger(__name__)

SYSTEM = {"system": "timeout"}
ESCALATION_ACTOR = {"system": "escalation"}
RETRY_BAD_ROW_AFTER = timedelta(seconds=30)
BATCH, CHUNK = 1000, 500  # rows a sweep loads at once, and commits at once (at most)
# One sweep at a time (a session advisory lock: "CS" and 1; a single 64-bit
# key, which PostgreSQL keeps apart from the callbacks' two-key slot locks).
SWEEP_LOCK = 0x43530001
# The helper's (help_sweep): a second engine process that takes half of a
# backlog while it holds this, the rows with an odd last byte of their id.
HELPER_LOCK = 0x43530002
ASK_FOR_HELP_EVERY = 1.0  # seconds, at most, while a sweep has a backlog and no helper
BACKLOG = 200  # due rows in one load that make a backlog worth sharing


@dataclass(frozen=True)
class SweepResult:
    escalated: int = 0
    finished: int = 0
    reminded: int = 0
    failed: int = 0

    def __add__(self, other: SweepResult) -> SweepResult:
        return SweepResult(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def sweep(
    *, batch: int = BATCH, chunk: int = CHUNK, now: datetime | None = None, wait: float = 0.0
) -> SweepResult:
    """Handle every request that is due now, unless another sweep is doing so
    (it goes on until nothing is due: waiting ``wait`` seconds for it to end
    would only find its work done, or a little more to do).

    One sweep at a time is not needed for correctness (each change is
    conditional), but two at once load the same rows and one of them does its
    work for nothing, while holding the other's row locks.
    """
    total = SweepResult()
    while True:
        with one_sweep(wait) as mine:
            if not mine:
                return total
            result, seen = _sweep(batch=batch, chunk=chunk, now=now)
            total += result
        # A timer that found rows due while we held the lock left them to us
        # (fire): look once more now that it is free, or they would wait for
        # the next sweep. Unless this pass saw due rows and moved none of
        # them: those the next sweep retries, not this loop.
        stuck = seen and not (result.escalated or result.finished or result.failed)
        if now is not None or stuck or not ApprovalRequest.objects.due().exists():
            return total
        # Nor while a helper ends its half of a backlog: what is due may be its.
        if connection.vendor == "postgresql" and _helped():
            return total
        wait = 0.0


def help_sweep() -> SweepResult:
    """Take half of the sweep's backlog: the sweep that has one asks for help
    (a task in the engine's lane), and a second engine process, if there is
    one, ends the due rows whose id ends in an odd byte while the sweep does
    the others; with one engine process the task runs after the sweep and
    finds nothing left. One helper at a time; it stops when its half is done
    and the sweep, seeing its lock free, takes every row again."""
    with one_sweep(0, key=HELPER_LOCK) as mine:
        if not mine:
            return SweepResult()
        result, _ = _sweep(batch=BATCH, chunk=CHUNK, now=None, half=_ODD)
        return result


@contextmanager
def one_sweep(wait: float, *, key: int = SWEEP_LOCK) -> Iterator[bool]:
    """Hold the sweep's lock (a PostgreSQL session advisory lock, freed with the
    connection if the worker dies), waiting up to ``wait`` seconds for it;
    yields False if another sweep still holds it. SQLite: always True."""
    if connection.vendor != "postgresql":
        yield True
        return
    give_up = time.monotonic() + wait
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            (taken,) = cursor.fetchone()
        if taken:
            break
        if time.monotonic() >= give_up:
            yield False
            return
        time.sleep(0.02)
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def _sweep(
    *, batch: int, chunk: int, now: datetime | None, half: int | None = None
) -> tuple[SweepResult, int]:
    """The sweep itself:

    1. Load a batch of due rows, oldest deadline first (the partial index).
    2. Handle them in transactions of up to ``chunk`` rows (the first ones
       smaller, see ``_chunks``): one commit (one WAL flush) per chunk. On
       PostgreSQL the chunk's escalations go in one set-based statement
       (``escalate_many``); timeouts (the last level), and everything on
       SQLite, go row by row.
    3. Should the set-based step raise, it rolls back alone and its rows go
       row by row, each in a savepoint of its own: a row that raises rolls
       back alone, is logged and has its deadline pushed back a little, so it
       never blocks the others.
    4. Each change is conditional on the state we loaded (and its audit
       head); a row another process handled in the meantime updates nothing.
    5. Repeat until no due rows are left; then send the due reminders.
    6. With a backlog (``BACKLOG`` rows due at once), ask a second engine
       process for help (``help_sweep``); while one helps, load only the
       even half.

    ``half``: the helper's, the odd half only (and no reminders). Returns
    what it did, and how many due rows it loaded.
    """
    seen = 0
    roles = {role.name: role for role in Role.objects.all()}
    bulk = connection.vendor == "postgresql"
    # Not inside a caller's transaction: the writer's connection would not see it.
    shared = _Shared(roles, _writer() if bulk and not connection.in_atomic_block else None, bulk)
    sizes = _ramp(25, chunk)  # once per sweep: a batch's short tail does not restart it
    after: tuple[datetime, RequestId] | None = None
    asked = 0.0
    try:
        while True:
            mine = half
            if half is None and bulk and _helped():
                mine = _EVEN
            due = _load_due(now or timezone.now(), batch, after, roles, mine)
            backlog = half is None and bulk and mine is None and len(due) >= min(BACKLOG, batch)
            if backlog and time.monotonic() - asked > ASK_FOR_HELP_EVERY:
                asked = time.monotonic()
                outbox.ask_for_help()
            seen += len(due)
            if due:  # read before the chunks are handed over: escalating moves due_at
                after = (due[-1].deadline, due[-1].pk)
            for rows in _chunks(due, sizes):
                shared.put(rows)
            # Until none is queued: the writer may still hold one, whose rows
            # the next load skips (it starts after the last one loaded).
            shared.help()
            if len(due) < batch:
                break
    except BaseException:
        shared.close(abandon=True)
        raise
    counts = shared.close()
    reminders = ApprovalRequest.objects.reminder_due(now)
    if half is not None:  # the sweep's: a helper takes only escalations and timeouts
        reminders = reminders.none()
    for request_id, remind_at in reminders.values_list("id", "remind_at")[:batch]:
        if remind_at is None:  # the query excludes it; this tells the type checker
            continue
        try:
            counts["reminded"] += remind(request_id, remind_at=remind_at)
        except Exception:
            logger.exception("request %s: reminder failed", request_id)
            counts["failed"] += 1
    return SweepResult(**counts), seen


def _handle_chunk(
    rows: list[ApprovalRequest], roles: dict[str, Role], counts: dict[str, int], *, bulk: bool
) -> None:
    """One chunk, in one transaction, adding its outcomes to ``counts``."""
    # Rollups last, in key order: see sla.deferred (a decision on one of
    # these rows would otherwise deadlock with the chunk).
    with transaction.atomic(), sla.deferred():
        if bulk:  # partitioned first: escalating changes a row's level
            ending = [row for row in rows if row.is_last_level]
            _escalate_chunk([row for row in rows if not row.is_last_level], roles, counts)
            rows = _time_out_chunk(ending, counts)
        for request in rows:
            outcome = _handle_safely(request, roles)
            if outcome:
                counts[outcome] += 1


_EVEN, _ODD = 0, 1
# The last byte of the id: random in a UUID 4, so the halves are even.
_HALF = RawSQL(
    'get_byte(uuid_send("' + ApprovalRequest._meta.db_table + '"."id"), 15) %% 2',
    [],
    output_field=models.IntegerField(),
)


def _helped() -> bool:
    """Whether a helper sweep is running: someone holds its lock (looked up,
    not tried, so that a helper starting now does not find it taken)."""
    return _held(HELPER_LOCK)


def sweeping() -> bool:
    """Whether a sweep or a helper is ending due requests now (PostgreSQL;
    elsewhere, never: SQLite runs them in the caller)."""
    return connection.vendor == "postgresql" and (_held(SWEEP_LOCK) or _held(HELPER_LOCK))


def _held(key: int) -> bool:
    """Whether any session holds the advisory lock ``key``."""
    with connection.cursor() as cursor:
        # A 64-bit advisory key shows as its two 32-bit halves, objsubid 1.
        cursor.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND classid = %s::oid AND objid = %s::oid AND objsubid = 1 AND granted)""",
            [key >> 32, key & 0xFFFFFFFF],
        )
        (held,) = cursor.fetchone()
    return bool(held)


def _load_due(
    now: datetime,
    batch: int,
    after: tuple[datetime, RequestId] | None,
    roles: dict[str, Role],
    half: int | None = None,
) -> list[ApprovalRequest]:
    """Up to ``batch`` due rows, oldest deadline first, after ``after`` (the
    deadline and id of the last row this pass loaded: the rows of chunks
    still being written are not loaded again), of one ``half`` only if given.
    A row skipped since (one that a claim changed under the sweep) is found
    when the sweep looks again."""
    due = ApprovalRequest.objects.due(now)
    if half is not None:
        due = due.alias(half=_HALF).filter(half=half)
    if after is not None:
        # A range on the deadline (the partial index), less the ties already loaded.
        due = due.filter(due_at__gte=after[0]).exclude(due_at=after[0], pk__lte=after[1])
    oldest = due.order_by("due_at", "pk").only(*_ESCALATION_FIELDS)
    return _with_related(list(oldest[:batch]), roles)


class _Shared:
    """Chunks handed out in order to the sweeping thread and the writer
    thread, each on its own connection: while PostgreSQL writes and commits
    one chunk, Python prepares the next (each row's deadline and the HMAC of
    its event) or loads the next batch, so the sweep uses two cores where it
    used one. The rows of two chunks are disjoint, and each chunk is its own
    transaction. Without a writer, the sweeping thread handles them all."""

    def __init__(self, roles: dict[str, Role], writer: ThreadPoolExecutor | None, bulk: bool):
        self.roles, self.bulk = roles, bulk
        self.queue: deque[list[ApprovalRequest]] = deque()
        self.ready = threading.Condition()
        self.closed = False
        self.counts = {"escalated": 0, "finished": 0, "reminded": 0, "failed": 0}
        self.theirs = dict.fromkeys(self.counts, 0)
        self.done = writer.submit(self._in_writer) if writer else None

    def put(self, rows: list[ApprovalRequest]) -> None:
        with self.ready:
            self.queue.append(rows)
            self.ready.notify()

    def help(self) -> None:
        """Handle chunks in this thread until none is queued."""
        while (rows := self._take(wait=False)) is not None:
            _handle_chunk(rows, self.roles, self.counts, bulk=self.bulk)

    def close(self, *, abandon: bool = False) -> dict[str, int]:
        """Wait for the writer's last chunk (``abandon``: drop those queued)
        and return the outcomes of both threads."""
        with self.ready:
            self.closed = True
            if abandon:
                self.queue.clear()
            self.ready.notify_all()
        self.help()
        if self.done is not None:
            if abandon:  # the caller raises its own error; the writer's is logged
                if error := self.done.exception():
                    logger.error("the sweep's writer failed too", exc_info=error)
            else:
                self.done.result()
        return {outcome: n + self.theirs[outcome] for outcome, n in self.counts.items()}

    def _take(self, *, wait: bool) -> list[ApprovalRequest] | None:
        with self.ready:
            while wait and not self.queue and not self.closed:
                self.ready.wait()
            return self.queue.popleft() if self.queue else None

    def _in_writer(self) -> None:
        try:
            while (rows := self._take(wait=True)) is not None:
                _handle_chunk(rows, self.roles, self.theirs, bulk=True)
        finally:
            connection.close()  # the writer's own: back to the pool


_writers: dict[int, ThreadPoolExecutor] = {}


def _writer() -> ThreadPoolExecutor:
    """This process's second thread for the sweep (one per process, made on
    first use: a forked child makes its own)."""
    pid = os.getpid()
    if pid not in _writers:
        _writers[pid] = ThreadPoolExecutor(1, thread_name_prefix="sweep-writer")
    return _writers[pid]


# What escalating a request reads of it: the sweep loads only these, and the
# whole row of those about to end or to be sent to their agent (_with_related).
# In a burst, reading and decoding the rest of each row was a fifth of the work.
# What escalating changes but never reads (level_started_at, remind_at, the
# claim...) is not loaded either: only the rows sent to their agent are
# brought up to date in memory, and those are loaded whole.
_ESCALATION_FIELDS = (
    "id", "agent", "action", "summary", "context", "policy_version", "rule_name", "levels",
    "remind_seconds", "calendar", "status", "level", "owner_role", "due_at", "audit_seq",
    "audit_head",
)  # fmt: skip


def _with_related(rows: list[ApprovalRequest], roles: dict[str, Role]) -> list[ApprovalRequest]:
    """Attach each row's role, policy version and agent from one query per
    kind instead of a join per row: a batch shares a handful of them, and a
    policy version's spec would otherwise be parsed once per row. Rows loaded
    with ``_ESCALATION_FIELDS`` only are loaded whole when they will time out
    or be sent to their agent (the callback carries the whole request)."""
    by_id = {role.pk: role for role in roles.values()}
    versions = PolicyVersion.objects.select_related("policy").defer("spec", "diff")
    version = versions.in_bulk({row.policy_version_id for row in rows})
    agent = Agent.objects.in_bulk({row.agent_id for row in rows})
    partial = [
        row.pk
        for row in rows
        if (row.is_last_level or agent[row.agent_id].subscribe_escalations)
        and row.get_deferred_fields()  # last: it looks at every field of the model
    ]
    if partial:
        whole = ApprovalRequest.objects.in_bulk(partial)
        rows = [whole.get(row.pk, row) for row in rows]  # one gone since: handled as it was
    for row in rows:
        if row.owner_role_id in by_id:  # else loaded when used (a role made since)
            row.owner_role = by_id[row.owner_role_id]
        row.policy_version = version[row.policy_version_id]
        row.agent = agent[row.agent_id]
    return rows


def _ramp(first: int, largest: int) -> Iterator[int]:
    """Chunk sizes that start at ``first`` and double up to ``largest``: the
    most overdue rows commit within milliseconds, and the bulk of a backlog
    still goes in large transactions."""
    size = min(first, largest)
    while True:
        yield size
        size = min(size * 2, largest)


def _chunks(rows: list[ApprovalRequest], sizes: Iterator[int]) -> Iterator[list[ApprovalRequest]]:
    start = 0
    while start < len(rows):
        size = next(sizes)
        yield rows[start : start + size]
        start += size


def _escalate_chunk(
    escalating: list[ApprovalRequest], roles: dict[str, Role], counts: dict[str, int]
) -> None:
    """Escalate ``escalating`` in one set-based step, adding to ``counts``. On
    any error that step rolls back (its own savepoint) and the rows are
    handled one by one instead, so that the bad row alone fails."""
    if not escalating:
        return
    try:
        with transaction.atomic():
            counts["escalated"] += escalate_many(escalating, roles)
        return
    except Exception:
        logger.warning(
            "bulk escalation of %d requests failed; handling them one by one",
            len(escalating), exc_info=True,
        )  # fmt: skip
    for request in escalating:
        outcome = _handle_safely(request, roles)
        if outcome:
            counts[outcome] += 1


def _time_out_chunk(ending: list[ApprovalRequest], counts: dict[str, int]) -> list[ApprovalRequest]:
    """End ``ending`` in one set-based step (``time_out_many``), adding to
    ``counts``; returns the rows left to handle one by one: none, or all of
    them, reloaded, if that step raised (it rolls back alone)."""
    if not ending:
        return []
    mark = sla.pending_count()
    try:
        with transaction.atomic():
            counts["finished"] += time_out_many(ending)
        return []
    except Exception:
        sla.forget_since(mark)
        logger.warning(
            "bulk timeout of %d requests failed; handling them one by one",
            len(ending), exc_info=True,
        )  # fmt: skip
    # The objects carry what the rolled-back step wrote on them: read them again.
    roles = {row.owner_role.name: row.owner_role for row in ending}
    again = ApprovalRequest.objects.filter(pk__in=[row.pk for row in ending])
    return _with_related(list(again.order_by("due_at")), roles)


def fire() -> str | None:
    """A precise timer went off (approvals.timers): handle what is due now.

    One request due: that row alone, in whichever engine process the timer
    lands, so timers for different moments run side by side while sweeps
    run one at a time. (Making every timer sweep was measured worse in the
    soak: every deadline of the run waited on one process.) More than one (a
    burst, or a worker that restarted and whose timers go off late): the
    sweep, which ends them in bulk; if a sweep is running already, this
    process helps it (``help_sweep``), and what is left the sweep finds
    (it looks again once it lets go of its lock).

    A timer with nothing left to do (a sweep or a decision was first) costs
    one small query."""
    due = ApprovalRequest.objects.due().order_by("due_at").values_list("pk", flat=True)[:2]
    ids = list(due)
    if len(ids) > 1:
        result = sweep()
        if result == SweepResult() and connection.vendor == "postgresql":
            result = help_sweep()  # one is running: take half of its backlog
        return "swept" if result.escalated or result.finished else None
    if not ids:
        return None
    request = (
        ApprovalRequest.objects.due()
        .filter(pk=ids[0])
        .select_related("owner_role", "policy_version__policy", "agent")
        .first()
    )
    if request is None:
        return None
    return _handle_safely(request, {})


def deadlines_soon(within: timedelta) -> list[datetime]:
    """The deadlines of the pending requests due in the next ``within``, for
    which to set precise timers (a burst's are many, its timers few)."""
    now = timezone.now()
    soon = (
        ApprovalRequest.objects.filter(
            status=Status.PENDING, due_at__gt=now, due_at__lte=now + within
        )
        .order_by("due_at")
        .values_list("due_at", flat=True)[:50_000]
    )
    # due_at is never None here (the filter); this tells the type checker.
    return [due_at for due_at in soon if due_at is not None]


def _handle_safely(request: ApprovalRequest, roles: dict[str, Role]) -> str | None:
    level, due_at = request.level, request.deadline
    mark = sla.pending_count()
    try:
        with transaction.atomic():
            return handle_due(request, roles)
    except Exception:
        sla.forget_since(mark)  # its savepoint rolled back: so does its rollup
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


# ``transition`` applied to a set, in one statement and one round trip: the
# conditional UPDATE of every row on the state it was loaded in, audit head
# included, writing each row's new head; then, for exactly the rows it updated
# (``moved``), their ownership, audit event and notification. Each event's
# HMAC was computed in Python over that row's previous head (audit.prepare),
# as ``transition`` does. The rows travel as one JSON parameter (typed by the
# column list), not thousands of placeholders.
_REQUESTS, _OWNERSHIPS = ApprovalRequest._meta.db_table, Ownership._meta.db_table
_EVENTS, _NOTIFICATIONS = AuditEvent._meta.db_table, Notification._meta.db_table
_ESCALATE_MANY = f"""
    WITH v AS (
        SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS x(
            id uuid, was_level smallint, was_due timestamptz, was_seq integer,
            to_role bigint, to_role_name varchar, due_at timestamptz, remind_at timestamptz,
            prev_hash varchar, head varchar, policy varchar, policy_version integer,
            rule varchar, data jsonb)
    ),
    moved AS (
        UPDATE {_REQUESTS} AS r
        SET level = v.was_level + 1, owner_role_id = v.to_role, level_started_at = %(now)s,
            due_at = v.due_at, remind_at = v.remind_at, claimed_by_id = NULL,
            claimed_at = NULL, updated_at = %(now)s, audit_seq = v.was_seq + 1,
            audit_head = v.head
        FROM v
        -- The array makes it an index lookup of these ids; a join on v alone
        -- would scan every request.
        WHERE r.id = ANY(ARRAY(SELECT id FROM v)) AND r.id = v.id
          AND r.status = 'pending' AND r.level = v.was_level
          AND r.due_at = v.was_due AND r.audit_seq = v.was_seq
        RETURNING r.id, r.level, r.action, r.summary, r.context
    ),
    owned AS (
        INSERT INTO {_OWNERSHIPS} (request_id, role_id, level)
        SELECT moved.id, v.to_role, moved.level FROM moved JOIN v ON v.id = moved.id
    ),
    events AS (
        INSERT INTO {_EVENTS} (request_id, seq, kind, at, actor, role, level, policy,
                              policy_version, rule, action, summary, context, data,
                              prev_hash, hash)
        SELECT moved.id, v.was_seq + 1, %(event)s, %(now)s, %(actor)s::jsonb,
               v.to_role_name, moved.level, v.policy, v.policy_version, v.rule,
               moved.action, moved.summary, moved.context, v.data, v.prev_hash, v.head
        FROM moved JOIN v ON v.id = moved.id
    ),
    notes AS (
        INSERT INTO {_NOTIFICATIONS} (request_id, kind, role_id, level, created_at,
                                     attempts, last_error, channel_results)
        SELECT moved.id, %(kind)s, v.to_role, moved.level, %(now)s, 0, '', '{{}}'::jsonb
        FROM moved JOIN v ON v.id = moved.id
        RETURNING id, request_id
    )
    SELECT notes.request_id, notes.id FROM notes
"""
# What escalate_many changes on a request object (claimed_by through its id).
_MOVED = (
    "level", "owner_role", "due_at", "level_started_at", "updated_at", "remind_at",
    "claimed_by_id", "claimed_at", "audit_seq", "audit_head",
)  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """One request's next level, computed without touching the request."""

    request: ApprovalRequest
    was_due: datetime
    to_role: Role
    due_at: datetime
    remind_at: datetime | None
    data: dict
    event: audit.Link


def escalate_many(requests: list[ApprovalRequest], roles: dict[str, Role]) -> int:
    """``escalate`` for many requests at once (PostgreSQL), with the same
    guarantees: one conditional UPDATE on (id, status, level, due_at,
    audit_seq) of every row, and the audit events, ownerships, notifications,
    callbacks and timers of exactly the rows it updated, in the caller's
    transaction. Returns how many escalated.

    Each row's next deadline is computed for that row (its own calendar), and
    each audit event's HMAC covers that row's previous head, as ``escalate``
    does. A row that moved on since it was loaded (decided, claimed,
    escalated by someone else) is not updated and gets nothing. Only the
    objects of rows whose agent is told of escalations are brought up to
    date; the others keep the state they were loaded in.
    """
    now = timezone.now()
    key = audit.audit_key()
    plans = [_plan(request, roles, now, key) for request in requests]
    rows = [
        {
            "id": str(plan.request.pk),
            "was_level": plan.request.level,
            "was_due": _exact(plan.request.deadline),
            "was_seq": plan.request.audit_seq,
            "to_role": plan.to_role.pk,
            "to_role_name": plan.to_role.name,
            "due_at": _exact(plan.due_at),
            "remind_at": _exact(plan.remind_at),
            "prev_hash": plan.event.prev_hash,
            "head": plan.event.hash,
            "policy": plan.request.policy_version.policy.name,
            "policy_version": plan.request.policy_version.number,
            "rule": plan.request.rule_name,
            "data": plan.data,
        }
        for plan in plans
    ]
    params: dict[str, str | datetime] = {
        "rows": json.dumps(rows),
        "now": now,
        "event": str(AuditEvent.Kind.ESCALATED),
        "actor": json.dumps(ESCALATION_ACTOR),
        "kind": str(Notification.Kind.ESCALATED),
    }
    with connection.cursor() as cursor:
        cursor.execute(_ESCALATE_MANY, params)
        notified = dict(cursor.fetchall())
    done = [plan for plan in plans if plan.request.pk in notified]
    if not done:
        return 0
    # Only the rows sent to their agent are brought up to date in memory (the
    # callback carries the request as it is now); the others' objects keep
    # the state they were loaded in, which is all the caller reads of them.
    told = [plan for plan in done if plan.request.agent.subscribe_escalations]
    loaded = [(plan, {name: getattr(plan.request, name) for name in _MOVED}) for plan in told]
    for plan in told:
        request = plan.request
        request.level, request.owner_role = request.level + 1, plan.to_role
        request.due_at, request.remind_at = plan.due_at, plan.remind_at
        request.level_started_at, request.updated_at = now, now
        request.claimed_by, request.claimed_at = None, None
        request.audit_seq, request.audit_head = plan.event.seq, plan.event.hash
    try:
        outbox.notified([notified[plan.request.pk] for plan in done])
        outbox.set_timers_on_commit([plan.due_at for plan in done])
        for plan in told:
            outbox.queue_callback(plan.request, "approval.escalated")
    except BaseException:
        # The caller rolls this chunk back and retries it row by row: give
        # it the rows as they were loaded, which is what the database holds.
        for plan, fields in loaded:
            for name, value in fields.items():
                setattr(plan.request, name, value)
        raise
    # One line per chunk, not per row: in a burst, 10,000 log lines cost the
    # engine more than the escalations' statement (each row's story is in
    # its audit trail).
    logger.info(
        "%d requests escalated, up to %.1fs after their deadlines",
        len(done), max((now - plan.was_due).total_seconds() for plan in done),
    )  # fmt: skip
    return len(done)


def _plan(request: ApprovalRequest, roles: dict[str, Role], now: datetime, key: bytes) -> _Plan:
    step = request.levels[request.level]
    to_role = roles.get(step["role"]) or Role.objects.get(name=step["role"])
    was_due = request.deadline
    due_at = request.add_time(now, step["deadline"])  # open hours only, under a calendar
    data = _escalated_data(request.owner_role, to_role, request.level, was_due, due_at, now)
    event = audit.link(
        request,
        AuditEvent.Kind.ESCALATED,
        actor=ESCALATION_ACTOR,
        at=now,
        data=data,
        role=to_role.name,
        level=request.level + 1,
        key=key,
    )
    remind_at = request.reminder_before(now, step["deadline"])
    return _Plan(request, was_due, to_role, due_at, remind_at, data, event)


def _exact(moment: datetime | None) -> str | None:
    """A timestamp as text, to the microsecond (the UPDATE compares it)."""
    return moment.isoformat() if moment else None


def time_out(request: ApprovalRequest) -> bool:
    """The last deadline passed: the rule's on_timeout outcome, and a ticket
    for manual review where the rule asks for one."""
    outcome = _on_timeout(request, timezone.now())
    status = outcome.status
    with transaction.atomic(savepoint=False):
        done = finish(
            request,
            status,
            by=SYSTEM,
            reason=outcome.reason,
            actor=SYSTEM,
            payload=outcome.payload,
            extra=outcome.extra,
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


# ``time_out`` applied to a set: one conditional UPDATE of every row on the
# state it was loaded in (pending, level, deadline, audit head), writing its
# outcome and new head; the events, tickets, notifications and callbacks of
# exactly the rows it updated follow in bulk, in the same transaction.
_TIME_OUT_MANY = f"""
    UPDATE {_REQUESTS} AS r
    SET status = v.status, due_at = NULL, remind_at = NULL, decided_at = %(now)s,
        decided_by = v.decided_by, decision_reason = v.reason,
        decision_payload = v.payload, decision_payload_sha256 = v.payload_sha256,
        decision_edited = v.edited, claimed_by_id = NULL, claimed_at = NULL,
        updated_at = %(now)s, decision_seconds = v.decision_seconds, sla_met = v.sla_met,
        audit_seq = v.was_seq + 1, audit_head = v.head
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(
        id uuid, was_level smallint, was_due timestamptz, was_seq integer, status varchar,
        decided_by jsonb, reason text, payload jsonb, payload_sha256 varchar, edited boolean,
        decision_seconds double precision, sla_met boolean, head varchar)
    WHERE r.id = ANY(%(ids)s::uuid[]) AND r.id = v.id
      AND r.status = 'pending' AND r.level = v.was_level
      AND r.due_at = v.was_due AND r.audit_seq = v.was_seq
    RETURNING r.id
"""
# The ticket events move the heads once more (rows this transaction holds).
_MOVE_HEADS = f"""
    UPDATE {_REQUESTS} AS r SET audit_seq = v.seq, audit_head = v.head
    FROM jsonb_to_recordset(%(rows)s::jsonb) AS v(id uuid, was_seq integer, seq integer,
                                                 head varchar)
    WHERE r.id = ANY(%(ids)s::uuid[]) AND r.id = v.id AND r.audit_seq = v.was_seq
"""


def time_out_many(requests: list[ApprovalRequest]) -> int:
    """``time_out`` for many requests whose last deadline passed (PostgreSQL),
    with the same guarantees and the same story: the outcome event (and the
    late seconds), a ticket and its event and notification where the rule
    asks for one, the requester told, the terminal callback, the wait woken;
    for exactly the rows the conditional UPDATE changed. Returns how many
    ended."""
    now = timezone.now()
    plans = []
    for request in requests:
        outcome = _on_timeout(request, now)
        changes = terminal_changes(
            request, outcome.status, by=SYSTEM, reason=outcome.reason, payload=outcome.payload,
            now=now,
        )  # fmt: skip
        data = terminal_data(changes, outcome.extra)
        event = audit.prepare(
            request, AuditEvent.Kind(outcome.status), actor=SYSTEM, data=data, at=now
        )
        plans.append((request, changes, event))
    rows = [
        {
            "id": str(request.pk),
            "was_level": request.level,
            "was_due": _exact(request.deadline),
            "was_seq": request.audit_seq,
            "status": changes["status"],
            "decided_by": changes["decided_by"],
            "reason": changes["decision_reason"],
            "payload": changes["decision_payload"],
            "payload_sha256": changes["decision_payload_sha256"],
            "edited": changes["decision_edited"],
            "decision_seconds": changes["decision_seconds"],
            "sla_met": changes["sla_met"],
            "head": event.hash,
        }
        for request, changes, event in plans
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            _TIME_OUT_MANY,
            {"rows": json.dumps(rows), "now": now, "ids": [row["id"] for row in rows]},
        )
        moved = {row[0] for row in cursor.fetchall()}
    done = [(request, changes, event) for request, changes, event in plans if request.pk in moved]
    if not done:
        return 0
    ended = []
    for request, changes, event in done:
        was_due = request.deadline
        for name, value in changes.items():
            setattr(request, name, value)
        request.audit_seq, request.audit_head = event.seq, event.hash
        ended.append((request, was_due))
    AuditEvent.objects.bulk_create([event for _, _, event in done])
    for request, _ in ended:
        sla.record(request, request.status, SYSTEM)
        if request.status in (Status.DENIED, Status.EXPIRED):
            outbox.notify_requester(request)
    _open_tickets([request for request, _ in ended if request.ticket_on_timeout])
    for request, _ in ended:
        if not request.ticket_on_timeout:
            # It has no ticket, and its callback's body says so without a query.
            ApprovalRequest.ticket.related.set_cached_value(request, None)
    notify_terminal_many([request.pk for request, _ in ended])
    outbox.queue_callbacks(
        [request for request, _ in ended],
        {request.pk: CALLBACK_TYPES[request.status] for request, _ in ended},
    )
    logger.info(
        "%d requests ended on timeout, up to %.1fs after their deadlines",
        len(ended), max((now - was_due).total_seconds() for _, was_due in ended),
    )  # fmt: skip
    return len(ended)


KIND_TICKET = Notification.Kind.TICKET


def _open_tickets(requests: list[ApprovalRequest]) -> None:
    """The tickets of requests that ended on timeout in this transaction,
    with their ``ticket_opened`` events and notifications, in bulk."""
    tickets = Ticket.objects.bulk_create(
        [Ticket(request=request, role=request.owner_role) for request in requests]
    )
    events, heads = [], []
    for request, ticket in zip(requests, tickets, strict=True):
        event = audit.prepare(
            request, AuditEvent.Kind.TICKET_OPENED, actor=SYSTEM,
            data={"ticket": ticket.pk, "role": ticket.role.name},
        )  # fmt: skip
        heads.append(
            {"id": str(request.pk), "was_seq": request.audit_seq, "seq": event.seq,
             "head": event.hash}
        )  # fmt: skip
        request.audit_seq, request.audit_head = event.seq, event.hash
        events.append(event)
    if not events:
        return
    with connection.cursor() as cursor:
        cursor.execute(_MOVE_HEADS, {"rows": json.dumps(heads), "ids": [h["id"] for h in heads]})
        if cursor.rowcount != len(heads):
            raise RuntimeError("a ticket's request changed under its own transaction")
    AuditEvent.objects.bulk_create(events)
    notes = Notification.objects.bulk_create(
        [
            Notification(request=request, kind=KIND_TICKET, role=ticket.role, level=request.level)
            for request, ticket in zip(requests, tickets, strict=True)
        ]
    )
    outbox.notified([note.pk for note in notes])


@dataclass(frozen=True)
class _Timeout:
    status: Status
    reason: str
    payload: dict | None
    extra: dict


def _on_timeout(request: ApprovalRequest, now: datetime) -> _Timeout:
    """How the rule ends ``request`` when its last deadline passed (``time_out``
    and ``time_out_many`` alike)."""
    status = Status(OnTimeout(request.on_timeout).status)
    if status == Status.APPROVED and not request.fail_open:
        status = Status.EXPIRED  # validation forbids this; never approve on silence by accident
    return _Timeout(
        status=status,
        reason=f"No decision before the level {request.level} deadline.",
        payload=request.payload if status == Status.APPROVED else None,
        extra={"late_seconds": round((now - request.deadline).total_seconds(), 3)},
    )


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
