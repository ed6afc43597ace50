"""Sending notifications from the outbox: at least once, and not twice in a row.

A sender takes a short lease on the row by a conditional UPDATE, sends outside
any transaction, then marks it sent. A sender that dies leaves the lease to
expire, and the sweep sends the row again.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from approvals.escalation import sweeping
from approvals.messages import Members, compose, compose_group, grouped
from approvals.models import Notification
from approvals.notify import Message, Unreachable, channels

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
# A batch (send_many) stops starting sends after this long and hands the rest
# to tasks of their own: its lease (above) must outlast its last send (each
# channel bounds its own, 10 s).
BATCH_BUDGET = timedelta(seconds=15)
# A row still unsent this long after it was written has lost its task (Redis
# down, a worker killed): the outbox sweep hands it to a new one.
HAND_OVER_AFTER = timedelta(seconds=30)
# How long a sweep's notifications let the sweep that wrote them go first:
# in a burst, the engine and the notifications lane share the machine's
# cores, and every escalation's lag counts, while a mail two seconds later
# does not (after_sweeps).
AFTER_SWEEPS_FOR = timedelta(seconds=2)
AFTER_SWEEPS_EVERY = 0.05  # seconds between looks
MAX_ATTEMPTS = 10


def send(notification_id: int, lease: datetime | None = None) -> bool:
    """Send one notification unless someone else holds it: a task the outbox
    sweep handed it to holds it by ``lease`` (see ``hand_over_unsent``)."""
    now = timezone.now()
    claimed = (
        _sendable(now, lease)
        .filter(pk=notification_id)
        .update(locked_until=now + LEASE, attempts=F("attempts") + 1)
    )
    if not claimed:
        return False
    notification = _to_compose().get(pk=notification_id)
    results, errors = _deliver([notification], compose(notification))
    return _settle(notification_id, results, errors)


def after_sweeps(written: datetime) -> None:
    """Wait while a sweep (or its helper) is running, until ``AFTER_SWEEPS_FOR``
    after ``written``, when a sweep's notifications were handed over: a
    burst's escalations land sooner when its sweep has the cores to itself
    (bench/escalation.py --only-burst), and its notifications go out
    together after it. Later messages of the same burst wait less, none
    beyond the bound: under sweeps without end, notifications are late by
    ``AFTER_SWEEPS_FOR`` at most, whatever the two machines' clocks say."""
    now = timezone.now()
    # By this clock too: the engine's may be ahead of ours.
    until = min(written, now) + AFTER_SWEEPS_FOR
    while timezone.now() < until and sweeping():
        time.sleep(AFTER_SWEEPS_EVERY)


def send_many(
    notification_ids: list[int], lease: datetime | None = None
) -> list[tuple[int, datetime]]:
    """``send`` for the notifications a chunk of the sweep wrote (a burst of
    escalations is thousands): one claim, one load, each role's members read
    once and the outcomes written together, where ``send`` takes four
    queries and a task of its own for each. Every notification still goes
    to every channel and keeps its own outcome; one held by someone else is
    skipped, unless ``lease`` is the one it is held by (see ``send``).
    Several to the same people about the same kind of event go as one
    digest (approvals.messages.grouped), and share its outcome.

    Should the sends take longer than ``BATCH_BUDGET`` (a slow channel), the
    rest are handed back, still leased to this batch: returns those (id,
    lease) pairs, for tasks of their own (``send`` with the lease)."""
    now = timezone.now()
    held, lease = lease, now + LEASE
    with transaction.atomic():
        claimed = list(
            _sendable(now, held)
            .filter(pk__in=notification_ids)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        Notification.objects.filter(pk__in=claimed).update(
            locked_until=lease, attempts=F("attempts") + 1
        )
    batch = list(_to_compose().filter(pk__in=claimed).order_by("pk"))
    members: Members = {}
    give_up = time.monotonic() + BATCH_BUDGET.total_seconds()
    outcomes: dict[str, tuple[dict[str, object], list[int]]] = {}
    left = []
    for group in grouped(batch):
        ids = [notification.pk for notification in group]
        if time.monotonic() > give_up:
            left += [(pk, lease) for pk in ids]
            continue
        results, errors = _deliver(group, compose_group(group, members))
        fields = _outcome_fields(ids, results, errors)
        outcomes.setdefault(_same(fields), (fields, []))[1].extend(ids)
    # One statement per distinct outcome (nearly always one: every channel
    # sent), where bulk_update built a CASE per row and field: it was most of
    # a batch's time. Only rows this batch still holds: a lease that ran out
    # meanwhile is someone else's now, and their outcome theirs to write.
    sent = timezone.now()
    for fields, ids in outcomes.values():
        if "sent_at" in fields:
            fields["sent_at"] = sent
        Notification.objects.filter(pk__in=ids, locked_until=lease).update(**fields)
    return left


def _same(fields: dict[str, object]) -> str:
    """What tells two outcomes apart; of ``sent_at``, only whether it is set
    (the batch writes one time)."""
    return json.dumps({**fields, "sent_at": "sent_at" in fields}, sort_keys=True)


def _deliver(
    notifications: list[Notification], message: Message
) -> tuple[dict[str, str], list[str]]:
    """Send ``message`` (for ``notifications``: one, or a digest's) through
    each channel that has not taken it yet: the results by channel, and the
    errors."""
    results = dict(notifications[0].channel_results)
    errors = []
    pending = [(name, channel) for name, channel in channels().items() if name not in results]
    for number, (name, channel) in enumerate(pending, 1):
        try:
            channel.send(message)
        except Unreachable as exc:
            results[name] = "unreachable"
            errors.append(f"{_label(name)}: nobody to reach ({exc})")
        except Exception as exc:
            errors.append(f"{_label(name)}: {type(exc).__name__}: {exc}")
            continue
        else:
            results[name] = "sent"
        # Recorded channel by channel, so a crash before the end re-sends
        # nothing; the last one's result goes with the outcome, in one write.
        if number < len(pending):
            Notification.objects.filter(pk__in=[n.pk for n in notifications]).update(
                channel_results=results
            )
    return results, errors


def _sendable(now: datetime, lease: datetime | None = None) -> QuerySet[Notification]:
    """Notifications a sender may take now: unsent, with attempts left, and
    leased to nobody (or their lease ran out, or it is ``lease``)."""
    free = Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    if lease is not None:
        free |= Q(locked_until=lease)
    return Notification.objects.filter(free, sent_at__isnull=True, attempts__lt=MAX_ATTEMPTS)


def _to_compose() -> QuerySet[Notification]:
    """Notifications with what ``compose`` and ``_deliver`` read, and only
    that: a request's payload may be large, and in a batch of a hundred the
    decoding of its other columns (timestamps above all) cost more than
    composing the mail."""
    return Notification.objects.select_related("request", "role", "user").only(
        "kind", "level", "channel_results", "request_id", "role_id", "user_id",
        *(f"request__{name}" for name in _COMPOSED_OF_REQUEST),
        "role__name", "role__email", "role__slack_webhook", "user__email",
    )  # fmt: skip


_COMPOSED_OF_REQUEST = (
    "summary", "action", "levels", "due_at", "status", "decision_reason", "context",
)  # fmt: skip


def _settle(notification_id: int, results: dict[str, str], errors: list[str]) -> bool:
    """Sent when every channel delivered; retried while one failed for a
    reason that may pass; given up (never marked sent, error kept for the
    admin) when a channel had nobody to reach."""
    fields = _outcome_fields([notification_id], results, errors)
    Notification.objects.filter(pk=notification_id).update(**fields)
    return "sent_at" in fields


def _outcome_fields(
    notification_ids: list[int], results: dict[str, str], errors: list[str]
) -> dict[str, object]:
    fields: dict[str, object] = {
        "locked_until": None,
        "last_error": "; ".join(errors)[:2000],
        "channel_results": results,
    }
    if all(results.get(name) == "sent" for name in channels()):
        fields["sent_at"] = timezone.now()
    elif all(name in results for name in channels()):
        fields["attempts"] = MAX_ATTEMPTS  # only unreachable ones left: retrying cannot help
    if errors:
        first, more = notification_ids[0], len(notification_ids) - 1
        which = f"{first} and {more} more (a digest)" if more else str(first)
        logger.warning("notification %s: %s", which, fields["last_error"])
    return fields


def _label(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def hand_over_unsent(
    older_than: timedelta = HAND_OVER_AFTER, limit: int = 200
) -> list[tuple[int, datetime]]:
    """Rows whose task was lost or failed, leased to the tasks the outbox
    sweep is about to queue for them: (id, lease) pairs.

    The lease keeps the next sweeps from queueing the same rows again while
    those tasks wait their turn. Without it, a notifications lane running
    behind got every late row again every ten seconds, which put it further
    behind (the soak measured a third of its sends to be such repeats)."""
    now = timezone.now()
    lease = now + LEASE
    with transaction.atomic():
        ids = list(
            _sendable(now)
            .filter(created_at__lte=now - older_than)
            .order_by("created_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        Notification.objects.filter(pk__in=ids).update(locked_until=lease)
    return [(pk, lease) for pk in ids]
