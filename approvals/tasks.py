"""Celery tasks: thin, idempotent, taking primary keys; the work is in the domain."""

from __future__ import annotations

from celery import shared_task

from approvals import escalation, notifications


@shared_task(name="approvals.tasks.sweep")
def sweep() -> dict:
    result = escalation.sweep()
    return result.__dict__


@shared_task(name="approvals.tasks.send_notification")
def send_notification(notification_id: int) -> bool:
    return notifications.send(notification_id)


@shared_task(name="approvals.tasks.sweep_outboxes")
def sweep_outboxes() -> int:
    """Send what a lost task left behind."""
    ids = notifications.unsent_ids()
    for notification_id in ids:
        notifications.send(notification_id)
    return len(ids)
