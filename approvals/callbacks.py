"""Delivering callbacks from the outbox: signed, retried with backoff, logged.

1. A sender takes leases on due deliveries by a conditional UPDATE, a batch
   at a time (``Sender``).
2. It signs each stored body (the exact bytes) with a fresh timestamp and
   POSTs them concurrently on its asyncio loop (approvals.sender), outside any
   transaction, each attempt bounded in wall-clock time on its own.
3. As attempts finish it logs each one and sets its outcome, a batch in one
   statement: delivered on a 2xx, dead on ``410 Gone`` or after the last
   scheduled attempt, otherwise the next attempt is scheduled with jitter.

A sender that dies between sending and writing back leaves its leases to
expire; those deliveries are then sent again under the same ``webhook-id``,
which receivers use to act once (at-least-once delivery). The lease outlasts
the longest a sending task can live (its hard time limit), so a slow attempt
is never sent twice at once.

One agent may have only ``APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT`` attempts
in flight, over all workers: each attempt holds one of the agent's slots (a
PostgreSQL session advisory lock, so a sender that dies frees its slots with
its connection). A sender takes no more of an agent's deliveries than it holds
slots of that agent. A delivery handed to a task that finds no free slot is
deferred by ``APPROVALS_CALLBACK_DEFER_SECONDS``, not dropped and not counted
as an attempt, and the sweep hands out at most the free slots per agent. So a
receiver that holds connections open occupies its few slots, never a worker.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from approvals import outbound, sender, signing
from approvals.models import Agent, Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

JITTER = 0.1  # each delay varies by up to 10 % either way, so retries do not stampede
# First key of the per-agent slot locks ("CS" and the slot number); the second is the agent.
SLOT_NAMESPACE = 0x43530000
# A sender takes new deliveries for this long, then finishes what is in flight:
# short, so a worker on the solo pool gets back to its other tasks soon.
SENDER_SECONDS = 5.0
POLL_SECONDS = 0.05  # while attempts are in flight, look for new due deliveries this often
MAX_IN_FLIGHT = 64  # attempts one sender has in flight at once


def task_time_limits() -> tuple[float, float]:
    """The delivery task's soft and hard time limits: the time a sender keeps
    taking new deliveries, then its last attempts' own wall-clock bound, with
    room to write the outcomes back."""
    timeout = settings.APPROVALS_CALLBACK_TIMEOUT
    return SENDER_SECONDS + timeout + 2.0, SENDER_SECONDS + timeout + 4.0


def lease_seconds() -> float:
    """A sender's lease on a delivery, in seconds: the one place it is computed.

    Never shorter than the longest a sending task can live (its hard time
    limit), so nobody takes the delivery over while it is still being sent."""
    return max(settings.APPROVALS_CALLBACK_LEASE_SECONDS, task_time_limits()[1] + 2.0)


def deliver(delivery_id: int, *, lease: datetime | None = None) -> str:
    """Attempt one delivery, and while at it the others that are due (see
    Sender); returns what happened to this one (for logs and tests)."""
    sender = Sender()
    try:
        outcome = sender.start(delivery_id, lease)
        if outcome is None:  # it is in flight
            sender.run()
            outcome = sender.outcomes[delivery_id]
        return outcome
    finally:
        sender.release_all()


@dataclass
class _Claimed:
    COLUMNS: ClassVar = ("pk", "agent_id", "webhook_id", "url", "body", "attempts")
    SQL_COLUMNS: ClassVar = ("id", "agent_id", "webhook_id", "url", "body", "attempts")

    pk: int
    agent_id: int
    webhook_id: str
    url: str
    body: str
    attempts: int
    was: datetime | None = None  # its lease when a sender took it
    timestamp: int = 0


class Sender:
    """Sends due deliveries concurrently on the process's asyncio loop
    (approvals.sender), taking new ones for SENDER_SECONDS, then finishing
    what is in flight.

    - It leases deliveries in batches by a conditional UPDATE (rows another
      sender is leasing are skipped), and no more of an agent's than it holds
      free slots of that agent: each attempt in flight holds one slot.
    - Besides free deliveries (never handed out, or whose lease ran out) it
      takes first attempts that the outbox handed to a task that has not run
      yet (they still carry the handover lease, see ``_handed``): that task
      then finds the delivery taken and skips it.
    - Outcomes are written as attempts finish, a batch per statement: one log
      row per attempt, the delivery's next state, its lease cleared.
    - Each delivery is attempted at most once per sender: a retry that is due
      at once is left to the next sender.
    """

    def __init__(self) -> None:
        self.limit = _slot_limit()
        self.held: dict[int, list[int]] = {}  # agent id -> slots held
        self.busy: Counter[int] = Counter()  # agent id -> attempts in flight
        self.blocked: dict[int, float] = {}  # agent id -> until when others hold its slots
        self.flying: dict[sender.Attempt, _Claimed] = {}
        self.outcomes: dict[int, str] = {}
        self.secrets: dict[int, list[str]] = {}
        self.until = time.monotonic() + SENDER_SECONDS
        self.next_look = 0.0  # when to look for more agents with due deliveries
        self.fast = connection.vendor == "postgresql"

    def start(self, delivery_id: int, lease: datetime | None) -> str | None:
        """Take the given delivery (handed over with ``lease``); None when it
        is in flight, else why not ("skipped", "deferred")."""
        if lease is not None and _TAKEN.get(delivery_id) == lease:
            # A sender in this process took it from under its handover lease,
            # which therefore no longer holds: skip it without asking the database.
            return "skipped"
        now = timezone.now()
        free = Q(locked_until__isnull=True) | Q(locked_until__lt=now)
        if lease is not None:  # handed over by the outbox or the sweep, which took the lease for us
            free |= Q(locked_until=lease)
        due = Delivery.objects.filter(
            pk=delivery_id, status=Delivery.State.PENDING, next_attempt_at__lte=now
        ).filter(free)
        ours = now + timedelta(seconds=lease_seconds())
        if not due.update(locked_until=ours):
            return "skipped"
        delivery = Delivery.objects.select_related("agent").get(pk=delivery_id)
        if not self._acquire({delivery.agent_id: 1}).get(delivery.agent_id):
            # The agent has its share of senders already: wait a little.
            later = now + timedelta(seconds=settings.APPROVALS_CALLBACK_DEFER_SECONDS)
            Delivery.objects.filter(pk=delivery_id, locked_until=ours).update(
                next_attempt_at=later, locked_until=None
            )
            return "deferred"
        self.secrets[delivery.agent_id] = delivery.agent.signing_secrets()
        self._send([_Claimed(*(getattr(delivery, column) for column in _Claimed.COLUMNS))])
        return None

    def run(self) -> None:
        """Until the time is up, take more due deliveries as slots free up;
        then wait for the last attempts (each bounded) and write them back."""
        while self.flying:
            done = sender.wait(self.flying, POLL_SECONDS)
            finished = [(self.flying.pop(attempt), attempt.result()) for attempt in done]
            for delivery, _ in finished:
                self.busy[delivery.agent_id] -= 1  # its slot is free for the next one
            if time.monotonic() < self.until:
                self._refill()  # first, so the next attempts are on the wire while we write
            if finished:
                self._record(finished)

    # Slots ----------------------------------------------------------------------

    def _free(self, agent_id: int) -> int:
        if not self.limit:
            return MAX_IN_FLIGHT
        return len(self.held.get(agent_id, [])) - self.busy[agent_id]

    def _acquire(self, wanted: dict[int, int]) -> dict[int, int]:
        """Try to hold ``wanted[agent]`` free slots of each agent; returns the
        free slots now held per agent."""
        agents: list[int] = []
        keys: list[int] = []
        counts: list[int] = []
        mine: list[int] = []
        for agent_id, count in wanted.items():
            held = self.held.get(agent_id, [])
            need = min(count, self.limit) - self._free(agent_id)
            if self.limit and need > 0 and len(held) < self.limit:
                agents.append(agent_id)
                keys.append(_key(agent_id))
                counts.append(need)
                # Advisory locks nest within a session: never count ours twice.
                mine.extend(_key(agent_id) * 65536 + slot for slot in held)
        if agents:
            by_key = dict(zip(keys, agents, strict=True))
            with connection.cursor() as cursor:
                # LIMIT stops the scan at the first n locks taken, so no more are
                # held; CASE, because the planner may reorder the tests of an AND.
                cursor.execute(
                    "SELECT w.agent, s.slot FROM unnest(%s::int[], %s::int[]) AS w(agent, n)"
                    " CROSS JOIN LATERAL (SELECT slot FROM generate_series(0, %s - 1) AS slot"
                    "  WHERE CASE WHEN w.agent::bigint * 65536 + slot = ANY(%s::bigint[])"
                    "   THEN false ELSE pg_try_advisory_lock(%s + slot, w.agent) END"
                    "  LIMIT w.n) AS s",
                    [keys, counts, self.limit, mine, SLOT_NAMESPACE],
                )
                for key, slot in cursor.fetchall():
                    self.held.setdefault(by_key[key], []).append(slot)
        free = {agent_id: self._free(agent_id) for agent_id in wanted}
        later = time.monotonic() + POLL_SECONDS * 4
        self.blocked.update({agent_id: later for agent_id, n in free.items() if n <= 0})
        return free

    def _release_idle(self) -> None:
        """Give back the slots no attempt of ours is using."""
        keys, slots = [], []
        for agent_id, held in self.held.items():
            while len(held) > self.busy[agent_id]:
                keys.append(_key(agent_id))
                slots.append(held.pop())
        self.held = {agent_id: held for agent_id, held in self.held.items() if held}
        if keys:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s + u.slot, u.agent)"
                    " FROM unnest(%s::int[], %s::int[]) AS u(agent, slot)",
                    [SLOT_NAMESPACE, keys, slots],
                )

    def release_all(self) -> None:
        self.busy.clear()
        with contextlib.suppress(Exception):  # a broken connection has let them go already
            self._release_idle()

    # Leases ---------------------------------------------------------------------

    def _refill(self) -> None:
        room = MAX_IN_FLIGHT - len(self.flying)
        if room <= 0:
            return
        now = timezone.now()
        clock = time.monotonic()
        self.blocked = {a: until for a, until in self.blocked.items() if until > clock}
        # 1. Agents with due deliveries whose slots we do not hold yet (now and
        # then: the agents we hold slots of are served by step 2 meanwhile).
        new: Counter[int] = Counter()
        if clock >= self.next_look or not self.held:
            self.next_look = clock + POLL_SECONDS
            full = [a for a, held in self.held.items() if len(held) >= (self.limit or 1)]
            skip = full + list(self.blocked)
            new.update(self._due_agents(now, skip, room))
            if new:
                self._acquire(dict(new))
        # 2. As many of each agent's due deliveries as we hold free slots of it.
        caps = {a: min(self._free(a), room) for a in self.held if self._free(a) > 0}
        if not self.limit:
            caps = {a: room for a in new}
        claimed = self._claim(now, caps) if caps else []
        if claimed:
            _TAKEN.update((c.pk, c.was) for c in claimed if c.was is not None)
            self._send(claimed)
            sender.kick()  # on the wire now, while we write back the last ones
        self._release_idle()

    def _retried(self) -> list[int]:
        return [pk for pk, outcome in self.outcomes.items() if outcome == "retry"]

    def _due_agents(self, now: datetime, skip: list[int], room: int) -> list[int]:
        """The agents of up to ``room`` due deliveries, agents in ``skip`` left out."""
        if self.fast:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT agent_id FROM {_TABLE} WHERE {_CLAIMABLE}"
                    " AND NOT (agent_id = ANY(%(skip)s)) AND NOT (id = ANY(%(retried)s))"
                    " ORDER BY next_attempt_at, id LIMIT %(room)s",
                    {**_claimable_params(now), "skip": skip, "retried": self._retried(),
                     "room": room},
                )  # fmt: skip
                return [agent_id for (agent_id,) in cursor.fetchall()]
        rows = _claimable(now).exclude(agent_id__in=skip).exclude(pk__in=self._retried())
        rows = rows.order_by("next_attempt_at", "pk")
        return list(rows.values_list("agent_id", flat=True)[:room])

    def _claim(self, now: datetime, caps: dict[int, int]) -> list[_Claimed]:
        """Lease up to ``caps[agent]`` due deliveries of each agent, skipping
        those another sender is leasing at this moment."""
        lease = timezone.now() + timedelta(seconds=lease_seconds())
        if self.fast:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {_TABLE} AS d SET locked_until = %(lease)s FROM ("
                    "  SELECT picked.id, picked.locked_until FROM unnest(%(agents)s::bigint[],"
                    "   %(caps)s::int[])"
                    "   AS c(agent, cap) CROSS JOIN LATERAL ("
                    f"   SELECT id, locked_until FROM {_TABLE}"
                    f"    WHERE agent_id = c.agent AND {_CLAIMABLE}"
                    "    AND NOT (id = ANY(%(retried)s))"
                    "    ORDER BY next_attempt_at, id LIMIT c.cap FOR UPDATE SKIP LOCKED"
                    "  ) AS picked"
                    ") AS p WHERE d.id = p.id RETURNING "
                    + ", ".join(f"d.{column}" for column in _Claimed.SQL_COLUMNS)
                    + ", p.locked_until",  # the lease it had: the handover lease, or none
                    {**_claimable_params(now), "lease": lease, "agents": list(caps),
                     "caps": list(caps.values()), "retried": self._retried()},
                )  # fmt: skip
                return [_Claimed(*row) for row in cursor.fetchall()]
        claimed: list[_Claimed] = []
        with transaction.atomic():
            for agent_id, cap in caps.items():
                rows = _claimable(now).filter(agent_id=agent_id).exclude(pk__in=self._retried())
                found = list(
                    rows.order_by("next_attempt_at", "pk")
                    .select_for_update(skip_locked=True)
                    .values_list(*_Claimed.COLUMNS)[:cap]
                )
                Delivery.objects.filter(pk__in=[row[0] for row in found]).update(locked_until=lease)
                claimed.extend(_Claimed(*row) for row in found)
        return claimed

    # Sending and writing back ---------------------------------------------------

    def _send(self, claimed: list[_Claimed]) -> None:
        missing = {c.agent_id for c in claimed} - self.secrets.keys()
        for agent in Agent.objects.filter(pk__in=missing):
            self.secrets[agent.pk] = agent.signing_secrets()
        for delivery in claimed:
            delivery.timestamp = int(time.time())
            headers = signing.headers(
                self.secrets[delivery.agent_id],
                delivery.webhook_id,
                delivery.timestamp,
                delivery.body,
            )
            attempt = sender.start(
                delivery.url,
                delivery.body.encode("utf-8"),
                headers,
                allow_private=settings.APPROVALS_ALLOW_PRIVATE_CALLBACKS,
                timeout=settings.APPROVALS_CALLBACK_TIMEOUT,
            )
            self.flying[attempt] = delivery
            self.busy[delivery.agent_id] += 1

    def _record(self, finished: list[tuple[_Claimed, outbound.Result]]) -> None:
        now = timezone.now()
        schedule = settings.APPROVALS_CALLBACK_SCHEDULE
        log, rows = [], []
        for delivery, result in finished:
            attempts = delivery.attempts + 1
            row = Delivery(
                pk=delivery.pk,
                attempts=attempts,
                locked_until=None,
                last_error=_describe(result),
                status=Delivery.State.PENDING,
                delivered_at=None,
                next_attempt_at=None,
            )
            if result.ok:
                outcome = "delivered"
                row.status, row.delivered_at = Delivery.State.DELIVERED, now
            elif result.status == 410 or attempts >= len(schedule):
                outcome = "dead"
                row.status = Delivery.State.DEAD
            else:
                outcome = "retry"
                delay = schedule[attempts] * random.uniform(1 - JITTER, 1 + JITTER)
                row.next_attempt_at = now + timedelta(seconds=delay)
            rows.append(row)
            log.append(
                DeliveryAttempt(
                    delivery_id=delivery.pk,
                    number=attempts,
                    at=now - timedelta(milliseconds=result.latency_ms),
                    webhook_timestamp=delivery.timestamp,
                    status_code=result.status,
                    latency_ms=result.latency_ms,
                    response_excerpt=result.excerpt,
                    error=result.error,
                )
            )
            self.outcomes[delivery.pk] = outcome
            level = logging.INFO if outcome == "delivered" else logging.WARNING
            logger.log(level, "callback %s attempt %s: %s (%s)", delivery.webhook_id, attempts,
                       outcome, row.last_error or result.status)  # fmt: skip
        if self.fast:
            _write(log, rows)
            return
        with transaction.atomic():
            DeliveryAttempt.objects.bulk_create(log)
            Delivery.objects.bulk_update(rows, _OUTCOME_FIELDS)


class _Taken:
    """The deliveries this process's senders took from under a handover lease,
    with that lease (the last ``size`` of them)."""

    def __init__(self, size: int = 100_000) -> None:
        self.leases: OrderedDict[int, datetime] = OrderedDict()
        self.size = size

    def update(self, taken: Iterable[tuple[int, datetime]]) -> None:
        self.leases.update(taken)
        while len(self.leases) > self.size:
            self.leases.popitem(last=False)

    def get(self, pk: int) -> datetime | None:
        return self.leases.get(pk)


_TAKEN = _Taken()
_TABLE = Delivery._meta.db_table
_LOG_TABLE = DeliveryAttempt._meta.db_table
# The SQL twin of _claimable(), for the senders' hot path on PostgreSQL.
_CLAIMABLE = (
    "status = 'pending' AND next_attempt_at <= %(now)s AND (locked_until IS NULL"
    " OR locked_until < %(now)s OR (attempts = 0 AND locked_until = created_at + %(handover)s))"
)
_OUTCOME_FIELDS = [
    "attempts", "status", "delivered_at", "next_attempt_at", "last_error", "locked_until"
]  # fmt: skip


def _claimable_params(now: datetime) -> dict[str, Any]:
    return {"now": now, "handover": timedelta(seconds=lease_seconds())}


def _write(log: list[DeliveryAttempt], rows: list[Delivery]) -> None:
    """The attempts' log rows and their deliveries' outcomes, in one statement
    (so at once, or not at all)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH log AS (INSERT INTO {_LOG_TABLE} (delivery_id, number, at, webhook_timestamp,"
            "  status_code, latency_ms, response_excerpt, error)"
            "  SELECT * FROM unnest(%s::bigint[], %s::int[], %s::timestamptz[], %s::bigint[],"
            "   %s::int[], %s::int[], %s::text[], %s::text[]))"
            f" UPDATE {_TABLE} AS d SET attempts = v.attempts, status = v.status,"
            "  delivered_at = v.delivered_at, next_attempt_at = v.next_attempt_at,"
            "  last_error = v.last_error, locked_until = NULL"
            " FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::timestamptz[],"
            "  %s::timestamptz[], %s::text[])"
            "  AS v(id, attempts, status, delivered_at, next_attempt_at, last_error)"
            " WHERE d.id = v.id",
            [
                [a.delivery_id for a in log], [a.number for a in log], [a.at for a in log],
                [a.webhook_timestamp for a in log], [a.status_code for a in log],
                [a.latency_ms for a in log], [a.response_excerpt for a in log],
                [a.error for a in log],
                [r.pk for r in rows], [r.attempts for r in rows], [r.status for r in rows],
                [r.delivered_at for r in rows], [r.next_attempt_at for r in rows],
                [r.last_error for r in rows],
            ],
        )  # fmt: skip


def _key(agent_id: int) -> int:
    return agent_id % 2**31


def _claimable(now: datetime) -> QuerySet[Delivery]:
    """Due deliveries no sender holds: never leased, lease run out, or still
    under the outbox's handover lease (``_handed``)."""
    return Delivery.objects.filter(status=Delivery.State.PENDING, next_attempt_at__lte=now).filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now) | _handed()
    )


def _handed() -> Q:
    """A first attempt the outbox handed to a task that has not taken it yet.

    approvals.outbox.queue_callback leases a new delivery until exactly
    ``created_at + lease_seconds()``; whoever takes a delivery leases it from
    a later moment, so that exact lease marks one nobody is sending yet. (If
    the web and worker processes disagree on the lease, nothing matches and
    each first attempt is simply sent by its own task.)"""
    return Q(attempts=0, locked_until=F("created_at") + timedelta(seconds=lease_seconds()))


def _slot_limit() -> int:
    # Slots are PostgreSQL advisory locks; on SQLite (one machine, the demo) there is no limit.
    if connection.vendor != "postgresql":
        return 0
    return max(settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT, 0)


def busy_slots() -> dict[int, int]:
    """Attempts in flight per agent (by its slot key), over all workers."""
    limit = _slot_limit()
    if not limit:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT objid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 2 AND classid BETWEEN %s AND %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " GROUP BY objid",
            [SLOT_NAMESPACE, SLOT_NAMESPACE + limit - 1],
        )
        return {int(objid): count for objid, count in cursor.fetchall()}


def _describe(result: outbound.Result) -> str:
    if result.ok:
        return ""
    if result.status is not None:
        return f"HTTP {result.status}"
    return result.error


def dispatch_due(limit: int = 500) -> list[tuple[int, datetime]]:
    """Take a lease on deliveries that are due and nobody is sending, and
    return them (with the lease) for the caller to enqueue.

    Per agent, no more than its free slots: an agent with a backlog behind a
    slow receiver neither floods the queue nor crowds out the others."""
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds())
    per_agent = _slot_limit()
    rows = Delivery.objects.filter(status=Delivery.State.PENDING, next_attempt_at__lte=now).filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    )
    if per_agent:
        rows = rows.annotate(
            n=Window(RowNumber(), partition_by=F("agent_id"), order_by=F("next_attempt_at").asc())
        ).filter(n__lte=per_agent)
    due = list(
        rows.order_by("next_attempt_at").values_list("pk", "locked_until", "agent_id")[:limit]
    )
    busy = busy_slots()
    handed: dict[int, int] = {}
    taken = []
    for pk, locked_until, agent_id in due:
        if per_agent:
            key = agent_id % 2**31
            if busy.get(key, 0) + handed.get(key, 0) >= per_agent:
                continue
            handed[key] = handed.get(key, 0) + 1
        if (
            Delivery.objects.filter(pk=pk, locked_until=locked_until, status=Delivery.State.PENDING)
            .update(locked_until=lease)
        ):  # fmt: skip
            taken.append((pk, lease))
    return taken


def redeliver(deliveries: QuerySet[Delivery]) -> list[tuple[int, datetime]]:
    """Send again from the start of the schedule, under the same webhook-id
    (each attempt signs a fresh timestamp). For admins, typically on dead ones.

    Returns (id, lease) pairs to hand to the delivery tasks.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds())
    ids = list(deliveries.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(
        status=Delivery.State.PENDING, attempts=0, next_attempt_at=now,
        locked_until=lease, delivered_at=None,
    )  # fmt: skip
    return [(pk, lease) for pk in ids]


def check_callback_url(url: str) -> None:
    """Refuse a callback URL when it is given (raises outbound.UnsafeURL).

    The address is checked again at every connection, against DNS rebinding.
    """
    allow_private = settings.APPROVALS_ALLOW_PRIVATE_CALLBACKS
    outbound.check_url(url, allow_private=allow_private, allow_http=allow_private or settings.DEBUG)
