"""Delivering callbacks from the outbox: signed, retried with backoff, logged.

1. A sender takes a lease on a due delivery by a conditional UPDATE.
2. It signs the stored body (the exact bytes) with a fresh timestamp and
   POSTs it, outside any transaction.
3. It logs the attempt and sets the outcome in one transaction: delivered on
   a 2xx, dead on ``410 Gone`` or after the last scheduled attempt, otherwise
   the next attempt is scheduled with jitter.

A sender that dies between sending and writing back leaves its lease to
expire; the delivery is then sent again under the same ``webhook-id``, which
receivers use to act once (at-least-once delivery).
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import outbound, signing
from approvals.models import Delivery, DeliveryAttempt

logger = logging.getLogger(__name__)

JITTER = 0.1  # each delay varies by up to 10 % either way, so retries do not stampede


def deliver(delivery_id: int, *, lease: datetime | None = None) -> str:
    """Attempt one delivery; returns what happened (for logs and tests)."""
    now = timezone.now()
    free = Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    if lease is not None:  # handed over by the sweep, which took the lease for us
        free |= Q(locked_until=lease)
    claimed = (
        Delivery.objects.filter(pk=delivery_id, status=Delivery.State.PENDING)
        .filter(next_attempt_at__lte=now)
        .filter(free)
        .update(locked_until=now + timedelta(seconds=settings.APPROVALS_CALLBACK_LEASE_SECONDS))
    )
    if not claimed:
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
    """Take a short lease on deliveries that are due and nobody is sending,
    and return them (with the lease) for the caller to enqueue."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.APPROVALS_CALLBACK_LEASE_SECONDS)
    due = list(
        Delivery.objects.filter(status=Delivery.State.PENDING, next_attempt_at__lte=now)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", "locked_until")[:limit]
    )
    taken = []
    for pk, locked_until in due:
        if (
            Delivery.objects.filter(pk=pk, locked_until=locked_until, status=Delivery.State.PENDING)
            .update(locked_until=lease)
        ):  # fmt: skip
            taken.append((pk, lease))
    return taken


def redeliver(deliveries) -> list[tuple[int, datetime]]:
    """Send again from the start of the schedule, under the same webhook-id
    (each attempt signs a fresh timestamp). For admins, typically on dead ones.

    Returns (id, lease) pairs to hand to the delivery tasks.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.APPROVALS_CALLBACK_LEASE_SECONDS)
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
