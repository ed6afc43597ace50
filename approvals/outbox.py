"""Writing outbox rows: in the caller's transaction, handed to Celery on commit.

Nothing here talks to the network. A row whose task is lost (Redis down, a
worker killed) is found again by the sweep, so every row is acted on at least
once, and the tasks that act on them are idempotent.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import lanes, timers
from approvals.callbacks import lease_seconds
from approvals.models import ApprovalRequest, Delivery, Notification, RequestId
from approvals.representation import represent
from policies.durations import iso_instant
from policies.models import Role

logger = logging.getLogger(__name__)


def notify(request: ApprovalRequest, kind: str, *, role: Role | None = None) -> Notification:
    notification = Notification.objects.create(
        request=request, kind=kind, role=role or request.owner_role, level=request.level
    )
    transaction.on_commit(lambda: _enqueue(lanes.SEND_NOTIFICATION, notification.pk))
    return notification


def notified(notification_ids: list[int]) -> None:
    """Notifications a set-based statement inserted in the caller's
    transaction: hand them to the notifications lane after commit, in one
    message per chunk (``_fan_out``)."""
    if len(notification_ids) == 1:
        transaction.on_commit(lambda: _enqueue(lanes.SEND_NOTIFICATION, notification_ids[0]))
    else:
        transaction.on_commit(lambda: _fan_out(lanes.FAN_OUT_NOTIFICATIONS, notification_ids))


def notified_soon(notification: Notification) -> None:
    """A notification the caller's own statement inserted (a create's): after
    commit it goes to the notifications lane from this process's publisher
    thread, so the request that wrote it does not wait on the broker."""
    transaction.on_commit(lambda: publish_soon(lanes.SEND_NOTIFICATION, notification.pk))


def notify_requester(request: ApprovalRequest) -> Notification | None:
    """Tell the person the agent asked on behalf of (``requester.on_behalf_of``,
    when it names a user) that the request was denied or expired."""
    from django.contrib.auth import get_user_model

    username = request.on_behalf_of
    if username is None:
        return None
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        return None
    notification = Notification.objects.create(
        request=request,
        kind=Notification.Kind.OUTCOME,
        role=request.owner_role,
        user=user,
        level=request.level,
    )
    transaction.on_commit(lambda: _enqueue(lanes.SEND_NOTIFICATION, notification.pk))
    return notification


def queue_callback(request: ApprovalRequest, event_type: str) -> Delivery | None:
    """Queue ``approval.<event>`` for the agent, with the request as it is now."""
    url = request.callback_url
    if not url:
        return None
    now = timezone.now()
    # The first attempt's task is handed this lease, so the sweep leaves the
    # delivery alone unless that task is lost (then the lease runs out).
    lease = now + timedelta(seconds=lease_seconds())
    delivery = _delivery(request, event_type, now, lease)
    delivery.save(force_insert=True)
    transaction.on_commit(lambda: enqueue_delivery(delivery.pk, lease))
    return delivery


def queue_callbacks(requests: list[ApprovalRequest], event_type: dict[RequestId, str]) -> int:
    """``queue_callback`` for many requests (one INSERT): ``event_type`` by
    request id. Returns how many were queued (requests without a URL get none)."""
    now = timezone.now()
    lease = now + timedelta(seconds=lease_seconds())
    deliveries = Delivery.objects.bulk_create(
        [
            _delivery(request, event_type[request.pk], now, lease)
            for request in requests
            if request.callback_url
        ]
    )
    ids = [delivery.pk for delivery in deliveries]

    def enqueue() -> None:
        for delivery_id in ids:
            enqueue_delivery(delivery_id, lease)

    if ids:
        transaction.on_commit(enqueue)
    return len(ids)


def _delivery(
    request: ApprovalRequest, event_type: str, now: datetime, lease: datetime
) -> Delivery:
    body = json.dumps(
        {
            "type": event_type,
            "timestamp": iso_instant(now),
            "data": represent(request),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return Delivery(
        webhook_id=f"msg_{uuid.uuid4().hex}",
        locked_until=lease,
        request=request,
        agent_id=request.agent_id,
        event_type=event_type,
        url=request.callback_url,
        body=body,
        next_attempt_at=now,
        created_at=now,
    )


def enqueue_delivery(delivery_id: int, lease: datetime) -> None:
    _enqueue(lanes.DELIVER_CALLBACK, delivery_id, lease.isoformat())


def ask_for_help() -> None:
    """Ask another engine process to take half of the sweep's backlog
    (escalation.help_sweep); nothing if the broker is down."""
    _enqueue(lanes.HELP_SWEEP)


def set_timer(request: ApprovalRequest) -> None:
    """A precise timer for a deadline that is close (the sweep remains the
    guarantee: a timer lost with Redis changes nothing but the lag); none if
    this process set one for the same moment already (approvals.timers)."""
    if request.due_at is not None:
        set_timers_on_commit([request.due_at])


def set_timers_on_commit(deadlines: list[datetime]) -> None:
    """``set_timer`` for many deadlines, after the caller's commit."""
    latest = timezone.now() + timedelta(seconds=settings.APPROVALS_TIMER_LOOKAHEAD_SECONDS)
    close = [due_at for due_at in deadlines if due_at <= latest]
    if close:
        transaction.on_commit(lambda: set_timers(close))


def set_timers(deadlines: list[datetime]) -> int:
    """Hand the broker a timer for each moment of ``deadlines`` not timed yet
    by this process; returns how many. Call it outside a transaction (or
    after commit)."""
    moments = timers.untimed(deadlines)
    for moment in moments:
        _enqueue(lanes.FIRE_DEADLINE, moment.isoformat(), eta=moment)
    return len(moments)


# Rows to one fan-out message: a chunk of the sweep (escalation.CHUNK) is one.
FAN_OUT_SIZE = 500


def _fan_out(task_name: str, items: list[int]) -> None:
    """Hand many outbox rows to their lane in one message per chunk: the
    sweep pays one broker round trip per chunk, not one per row (a publish
    costs the engine about a millisecond: with one per 100 rows they were a
    tenth of a burst's sweep), and the lane sends them together
    (``notifications.send_many``). Each message says when it was written
    (no lease yet): the lane lets the sweep that wrote it finish first, for
    a while (``notifications.after_sweeps``)."""
    written = timezone.now().isoformat()
    for start in range(0, len(items), FAN_OUT_SIZE):
        _enqueue(task_name, items[start : start + FAN_OUT_SIZE], None, written)


def publish_soon(task_name: str, *args: Any) -> None:
    """Publish a task from this process's publisher thread, in the order
    handed in. Call it after commit. A message lost with the process (or the
    broker) is the same as one the broker refused: the outbox sweep finds the
    row and sends it."""
    global _unpublished_count
    pending = _publisher()
    with _unpublished:
        _unpublished_count += 1
    pending.put((task_name, args))


def flush(seconds: float = 5.0) -> bool:
    """Wait, at most ``seconds``, until the publisher thread has published
    everything handed to it so far; True if it has."""
    with _unpublished:
        return _unpublished.wait_for(lambda: _unpublished_count == 0, timeout=seconds)


_publish_queue: queue.SimpleQueue[tuple[str, tuple]] | None = None
_publisher_pid: int | None = None
_publisher_lock = threading.Lock()
_unpublished = threading.Condition()
_unpublished_count = 0


def _publisher() -> queue.SimpleQueue[tuple[str, tuple]]:
    global _publish_queue, _publisher_pid, _unpublished_count
    with _publisher_lock:
        # One thread per process: a forked child (gunicorn, Celery) starts its own.
        if _publish_queue is None or _publisher_pid != os.getpid():
            _publish_queue, _publisher_pid = queue.SimpleQueue(), os.getpid()
            with _unpublished:
                _unpublished_count = 0  # a parent's, not ours
            threading.Thread(
                target=_publish_forever, args=(_publish_queue,), name="outbox-publisher",
                daemon=True,
            ).start()  # fmt: skip
            # At exit, give the thread a moment to publish what it holds
            # (what it cannot, the outbox sweep will).
            atexit.register(flush, 2.0)
        return _publish_queue


def _publish_forever(pending: queue.SimpleQueue[tuple[str, tuple]]) -> None:
    global _unpublished_count
    while True:
        task_name, args = pending.get()
        try:
            _enqueue(task_name, *args)
        finally:
            with _unpublished:
                _unpublished_count -= 1
                _unpublished.notify_all()


def _enqueue(task_name: str, *args: Any, eta: datetime | None = None) -> None:
    from approvals_site.celery import app

    try:
        # No result is kept (CELERY_TASK_IGNORE_RESULT): saying so here spares
        # send_task looking up the result backend, which it does anew in every
        # thread, reading installed packages' metadata from disk.
        app.send_task(task_name, args=args, eta=eta, ignore_result=True)
    except Exception:  # the broker is down: the sweep will find the row
        import logging

        logging.getLogger(__name__).warning(
            "could not enqueue %s%r; the sweep will", task_name, args
        )
