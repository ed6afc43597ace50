"""Celery tasks: thin, idempotent, taking primary keys; the work is in the domain."""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.utils.dateparse import parse_datetime

from approvals import audit, callbacks, escalation, notifications


@shared_task(name="approvals.tasks.sweep")
def sweep() -> dict:
    result = escalation.sweep()
    return result.__dict__


@shared_task(name="approvals.tasks.fire_deadline")
def fire_deadline(request_id: str, level: int, due_at: str) -> str | None:
    return escalation.fire(request_id, level=level, due_at=_moment(due_at))


@shared_task(name="approvals.tasks.set_deadline_timers")
def set_deadline_timers() -> int:
    """Precise timers for the deadlines of the next minute or so, on top of the
    sweep: short ETAs only, so no worker holds a timer for every open request
    and Redis never redelivers one after its visibility timeout."""
    soon = escalation.due_soon(timedelta(seconds=settings.APPROVALS_TIMER_LOOKAHEAD_SECONDS))
    for request_id, level, due_at in soon:
        fire_deadline.apply_async(args=[str(request_id), level, due_at.isoformat()], eta=due_at)
    return len(soon)


@shared_task(name="approvals.tasks.seal_audit")
def seal_audit() -> int:
    """Seal the requests created in the last window (approvals.audit.seal)."""
    sealed = audit.seal()
    return sealed.requests if sealed else 0


@shared_task(name="approvals.tasks.send_notification")
def send_notification(notification_id: int) -> bool:
    return notifications.send(notification_id)


@shared_task(name="approvals.tasks.sweep_outboxes")
def sweep_outboxes() -> int:
    """Send the notifications a lost task left behind."""
    ids = notifications.unsent_ids()
    for notification_id in ids:
        notifications.send(notification_id)
    return len(ids)


@shared_task(name="approvals.tasks.deliver_callback")
def deliver_callback(delivery_id: int, lease: str | None = None) -> str:
    return callbacks.deliver(delivery_id, lease=_moment(lease) if lease else None)


@shared_task(name="approvals.tasks.sweep_callbacks")
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
