"""Celery tasks: thin, idempotent, taking primary keys; the work is in the domain."""

from __future__ import annotations

from celery import shared_task
from django.utils.dateparse import parse_datetime

from approvals import callbacks, escalation, notifications


@shared_task(name="approvals.tasks.sweep")
def sweep() -> dict:
    result = escalation.sweep()
    return result.__dict__


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
    return callbacks.deliver(delivery_id, lease=parse_datetime(lease) if lease else None)


@shared_task(name="approvals.tasks.sweep_callbacks")
def sweep_callbacks() -> int:
    """Hand due deliveries (retries, and first attempts whose task was lost) to workers."""
    taken = callbacks.dispatch_due()
    for delivery_id, lease in taken:
        deliver_callback.delay(delivery_id, lease.isoformat())
    return len(taken)
