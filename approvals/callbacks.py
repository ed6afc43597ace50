"""Delivering callbacks from the outbox: signed, retried with backoff, logged.

1. A sender takes a lease on a due delivery by a conditional UPDATE.
2. It signs the stored body (the exact bytes) with a fresh timestamp and
   POSTs it, outside any transaction.
3. It logs the attempt and sets the outcome in one transaction: delivered on
   a 2xx, dead on ``410 Gone`` or after the last scheduled attempt, otherwise
   the next attempt is scheduled with jitter.

A sender that dies between sending and writing back leaves its lease to
expire; the delivery is then sent again under the same ``webhook-id``, which
receivers use to act once (at-least-once delivery). The lease outlasts the
longest an attempt can take (the task's hard time limit), so a slow attempt is
never sent twice at once.

One agent may have only ``APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT`` attempts
in flight, over all workers: a sender holds one of the agent's slots (a
PostgreSQL session advisory lock, so a sender that dies frees its slot with its
connection) for the attempt. A delivery that finds no free slot is deferred by
``APPROVALS_CALLBACK_DEFER_SECONDS``, not dropped and not counted as an
attempt, and the sweep hands out at most the free slots per agent. So a
receiver that holds connections open occupies a few senders, never all.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from approvals import outbound, signing
from approvals.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

JITTER = 0.1  # each delay varies by up to 10 % either way, so retries do not stampede
# First key of the per-agent slot locks ("CS" and the slot number); the second is the agent.
SLOT_NAMESPACE = 0x43530000


def task_time_limits() -> tuple[float, float]:
    """The delivery task's soft and hard time limits: past the attempt's own
    wall-clock bound, with room to write the outcome back."""
    timeout = settings.APPROVALS_CALLBACK_TIMEOUT
    return timeout + 2.0, timeout + 4.0


def lease_seconds() -> float:
    """A sender's lease on a delivery, in seconds: the one place it is computed.

    Never shorter than the longest a sending task can live (its hard time
    limit), so nobody takes the delivery over while it is still being sent."""
    return max(settings.APPROVALS_CALLBACK_LEASE_SECONDS, task_time_limits()[1] + 2.0)


def deliver(delivery_id: int, *, lease: datetime | None = None) -> str:
    """Attempt one delivery; returns what happened (for logs and tests)."""
    now = timezone.now()
    free = Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    if lease is not None:  # handed over by the sweep, which took the lease for us
        free |= Q(locked_until=lease)
    due = Delivery.objects.filter(
        pk=delivery_id, status=Delivery.State.PENDING, next_attempt_at__lte=now
    ).filter(free)
    agent_id = due.values_list("agent_id", flat=True).first()
    if agent_id is None:
        return "skipped"
    with agent_slot(agent_id) as slot:
        if not slot:  # the agent has its share of senders already: wait a little
            later = now + timedelta(seconds=settings.APPROVALS_CALLBACK_DEFER_SECONDS)
            deferred = due.update(next_attempt_at=later, locked_until=None)
            return "deferred" if deferred else "skipped"
        if not due.update(locked_until=now + timedelta(seconds=lease_seconds())):
            return "skipped"
        delivery = Delivery.objects.select_related("agent").get(pk=delivery_id)
        timestamp = int(time.time())
        headers = signing.headers(
            delivery.agent.signing_secrets(), delivery.webhook_id, timestamp, delivery.body
        )
        result = outbound.post(
            delivery.url,
            delivery.body.encode("utf-8"),
            headers,
            allow_private=settings.APPROVALS_ALLOW_PRIVATE_CALLBACKS,
            timeout=settings.APPROVALS_CALLBACK_TIMEOUT,
        )
        return _record(delivery, result, timestamp)


def _slot_limit() -> int:
    # Slots are PostgreSQL advisory locks; on SQLite (one machine, the demo) there is no limit.
    if connection.vendor != "postgresql":
        return 0
    return max(settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT, 0)


@contextmanager
def agent_slot(agent_id: int) -> Iterator[bool]:
    """Hold one of the agent's sending slots for the block; yields False when
    all are taken (by this or any other worker)."""
    limit = _slot_limit()
    if not limit:
        yield True
        return
    key = agent_id % 2**31
    held = None
    with connection.cursor() as cursor:
        for slot in range(limit):
            cursor.execute(
                "SELECT pg_try_advisory_lock(%s::int, %s::int)", [SLOT_NAMESPACE + slot, key]
            )
            if cursor.fetchone()[0]:
                held = slot
                break
    if held is None:
        yield False
        return
    try:
        yield True
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock(%s::int, %s::int)", [SLOT_NAMESPACE + held, key]
            )


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


def _record(delivery: Delivery, result: outbound.Result, timestamp: int) -> str:
    now = timezone.now()
    attempts = delivery.attempts + 1
    schedule = settings.APPROVALS_CALLBACK_SCHEDULE
    fields: dict[str, Any] = {
        "attempts": attempts,
        "locked_until": None,
        "last_error": _describe(result),
    }
    if result.ok:
        outcome = "delivered"
        fields.update(status=Delivery.State.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif result.status == 410 or attempts >= len(schedule):
        outcome = "dead"
        fields.update(status=Delivery.State.DEAD, next_attempt_at=None)
    else:
        outcome = "retry"
        delay = schedule[attempts] * random.uniform(1 - JITTER, 1 + JITTER)
        fields["next_attempt_at"] = now + timedelta(seconds=delay)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=attempts,
            at=now - timedelta(milliseconds=result.latency_ms),
            webhook_timestamp=timestamp,
            status_code=result.status,
            latency_ms=result.latency_ms,
            response_excerpt=result.excerpt,
            error=result.error,
        )
        Delivery.objects.filter(pk=delivery.pk).update(**fields)
    level = logging.INFO if outcome == "delivered" else logging.WARNING
    logger.log(level, "callback %s attempt %s: %s (%s)", delivery.webhook_id, attempts, outcome,
               fields["last_error"] or result.status)  # fmt: skip
    return outcome


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
