"""Celery tasks: thin, idempotent, taking primary keys; the work is in the domain.

Names and lanes (queues) are declared in approvals.lanes; time limits here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils.dateparse import parse_datetime

from approvals import audit, callbacks, escalation, lanes, notifications, outbox


@shared_task(name=lanes.SWEEP)
def sweep() -> dict:
    result = escalation.sweep()
    return result.__dict__


@shared_task(name=lanes.HELP_SWEEP)
def help_sweep() -> dict:
    """Half of a sweep's backlog, in a second engine process (if there is one)."""
    return escalation.help_sweep().__dict__


@shared_task(name=lanes.FIRE_DEADLINE)
def fire_deadline(*moment: str) -> str | None:
    """A timer set for ``moment`` went off (approvals.timers). Timers of an
    older version carry (request id, level, deadline): they wake the engine
    just the same."""
    return escalation.fire()


@shared_task(name=lanes.SET_DEADLINE_TIMERS)
def set_deadline_timers() -> int:
    """Precise timers for the deadlines of the next minute or so, on top of the
    sweep: short ETAs only, so no worker holds a timer for every open request
    and Redis never redelivers one after its visibility timeout."""
    soon = escalation.deadlines_soon(timedelta(seconds=settings.APPROVALS_TIMER_LOOKAHEAD_SECONDS))
    return outbox.set_timers(soon)


@shared_task(name=lanes.SEAL_AUDIT)
def seal_audit() -> int:
    """Seal the requests created in the last window (approvals.audit.seal)."""
    sealed = audit.seal()
    return sealed.requests if sealed else 0


# Each channel bounds its own sends (10 s each); the notification's lease is 60 s.
@shared_task(name=lanes.SEND_NOTIFICATION, soft_time_limit=45, time_limit=55)
def send_notification(notification_id: int, lease: str | None = None) -> bool:
    return notifications.send(notification_id, lease=_moment(lease) if lease else None)


@shared_task(name=lanes.FAN_OUT_NOTIFICATIONS, soft_time_limit=45, time_limit=55)
def fan_out_notifications(
    notification_ids: list[int], lease: str | None = None, written: str | None = None
) -> int:
    """Send a chunk's notifications together (notifications.send_many), once
    the sweep that wrote them at ``written`` is done, or a little later;
    those a slow channel left no time for get tasks of their own, each with
    its own time limit. Returns how many it did not hand on (sent, failed,
    or already sent or held by someone else)."""
    if written:
        notifications.after_sweeps(_moment(written))
    left = notifications.send_many(notification_ids, lease=_moment(lease) if lease else None)
    for notification_id, theirs in left:
        send_notification.delay(notification_id, theirs.isoformat())
    return len(notification_ids) - len(left)


@shared_task(name=lanes.SWEEP_OUTBOXES)
def sweep_outboxes() -> int:
    """Hand the notifications a lost task left behind to the notifications lane
    (never send them here: the engine's lane does not wait on the network),
    100 to a task: those that failed together (a digest, a channel down in a
    burst) are retried as a digest again, not one message each."""
    taken = notifications.hand_over_unsent()
    for start in range(0, len(taken), 100):
        part = taken[start : start + 100]
        lease = part[0][1]  # one for all: hand_over_unsent leases them together
        fan_out_notifications.delay([pk for pk, _ in part], lease.isoformat())
    return len(taken)


_SOFT, _HARD = callbacks.task_time_limits()


@shared_task(name=lanes.DELIVER_CALLBACK, soft_time_limit=_SOFT, time_limit=_HARD)
def deliver_callback(delivery_id: int, lease: str | None = None) -> str:
    return callbacks.deliver(delivery_id, lease=_moment(lease) if lease else None)


@shared_task(name=lanes.SWEEP_CALLBACKS)
def sweep_callbacks() -> int:
    """Hand due deliveries (retries, and first attempts whose task was lost) to workers."""
    taken = callbacks.dispatch_due()
    for delivery_id, lease in taken:
        deliver_callback.delay(delivery_id, lease.isoformat())
    return len(taken)


def _moment(text: str) -> datetime:
    moment = parse_datetime(text)
    if moment is None:
        raise ValueError(f"not an ISO 8601 date and time: {text!r}")
    return moment
