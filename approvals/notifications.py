"""Sending notifications from the outbox: at least once, and not twice in a row.

A sender takes a short lease on the row by a conditional UPDATE, sends outside
any transaction, then marks it sent. A sender that dies leaves the lease to
expire, and the sweep sends the row again.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from approvals.models import Notification
from approvals.notify import Message, channels

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 10
SUBJECTS: dict[str, str] = {
    Notification.Kind.NEW: "Approval needed",
    Notification.Kind.ESCALATED: "Escalated to you",
    Notification.Kind.REMINDER: "Reminder: a decision is due soon",
    Notification.Kind.TICKET: "Manual review needed (no decision in time)",
    Notification.Kind.OUTCOME: "Your request ended {status}",
}


def send(notification_id: int) -> bool:
    now = timezone.now()
    claimed = (
        Notification.objects.filter(pk=notification_id, sent_at__isnull=True)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .filter(attempts__lt=MAX_ATTEMPTS)
        .update(locked_until=now + LEASE, attempts=F("attempts") + 1)
    )
    if not claimed:
        return False
    notification = Notification.objects.select_related(
        "request__policy_version__policy", "role", "user"
    ).get(pk=notification_id)
    message = compose(notification)
    try:
        for channel in channels():
            channel.send(message)
    except Exception as exc:
        logger.warning("notification %s failed: %s", notification_id, exc)
        Notification.objects.filter(pk=notification_id).update(
            locked_until=None, last_error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return False
    Notification.objects.filter(pk=notification_id).update(
        sent_at=timezone.now(), locked_until=None, last_error=""
    )
    return True


def unsent_ids(older_than: timedelta = timedelta(seconds=10), limit: int = 200) -> list[int]:
    """Rows whose task was lost or failed; the outbox sweep sends them again."""
    cutoff = timezone.now() - older_than
    return list(
        Notification.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=timezone.now()))
        .filter(attempts__lt=MAX_ATTEMPTS)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )


def compose(notification: Notification) -> Message:
    request, role = notification.request, notification.role
    url = f"{settings.SITE_URL.rstrip('/')}/requests/{request.pk}"
    recipients = (
        [role.email] if role.email else [user.email for user in role.members() if user.email]
    )
    if notification.user is not None:  # to the requester, not to the role
        recipients = [notification.user.email] if notification.user.email else []
    lines = [
        request.summary,
        "",
        f"Action: {request.action}",
        f"Owner: {role.name} (level {notification.level} of {len(request.levels)})",
    ]
    if notification.kind == Notification.Kind.ESCALATED:
        previous = request.levels[notification.level - 2]["role"]
        lines.append(f"Escalated from: {previous}, who did not decide in time")
    if notification.kind == Notification.Kind.OUTCOME:
        lines.append(f"Outcome: {request.status}, requested on your behalf")
        if request.decision_reason:
            lines.append(f"Reason: {request.decision_reason}")
    elif notification.kind == Notification.Kind.TICKET:
        lines.append(f"Outcome: {request.status}; a manual-review ticket is open for {role.name}")
    elif request.due_at:
        lines.append(f"Decide by: {request.due_at:%Y-%m-%d %H:%M:%S} UTC")
    lines += ["", "Context:"]
    lines += [f"  {key}: {_short(value)}" for key, value in (request.context or {}).items()]
    lines += [
        "",
        f"Open the request: {url}",
        "(The link only opens the page; decisions are made there, after you log in.)",
    ]
    title = SUBJECTS[notification.kind].format(status=request.status)
    subject = f"[Countersign] {title}: {request.summary}"[:200]
    return Message(
        kind=notification.kind,
        role=role.name,
        recipients=recipients,
        subject=subject,
        body="\n".join(lines),
        url=url,
    )


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."
