"""What a notification says: one request's message, or a digest of many.

A burst of deadlines escalates thousands of requests to the same role within
a second or two. One mail (or Slack post) each would bury the people the
escalation is meant to reach, and Slack answers a webhook that posts faster
than about once a second with 429. So the notifications of one batch that go
to the same people about the same kind of event become one digest, listing
each request with its link.
"""

from __future__ import annotations

import json
import unicodedata

from django.conf import settings

from approvals.models import Notification
from approvals.notify import Message

SUBJECTS: dict[str, str] = {
    Notification.Kind.NEW: "Approval needed",
    Notification.Kind.ESCALATED: "Escalated to you",
    Notification.Kind.REMINDER: "Reminder: a decision is due soon",
    Notification.Kind.TICKET: "Manual review needed (no decision in time)",
    Notification.Kind.OUTCOME: "Your request ended {status}",
}
DIGEST_SUBJECTS: dict[str, str] = {
    Notification.Kind.NEW: "{count} approvals needed",
    Notification.Kind.ESCALATED: "{count} requests escalated to you",
    Notification.Kind.REMINDER: "Reminder: {count} decisions are due soon",
    Notification.Kind.TICKET: "Manual review needed for {count} requests (no decision in time)",
    Notification.Kind.OUTCOME: "{count} of your requests ended",
}
# Notifications of one batch to the same people about the same kind of event
# from which on they go as one digest: fewer are read one by one.
DIGEST_FROM = 5
DIGEST_MOST = 100  # requests one digest lists: a mail still read, a Slack post within its limit

Members = dict[int, list[str]]  # a role's id -> its members' addresses, read once per batch


def compose(notification: Notification, members: Members | None = None) -> Message:
    """The message for ``notification``; ``members`` keeps each role's member
    addresses between calls (a batch reads them once per role)."""
    request, role = notification.request, notification.role
    url = _request_url(notification)
    lines = [
        request.summary,
        "",
        f"Action: {request.action}",
        f"Owner: {role.name} (level {notification.level} of {len(request.levels)})",
    ]
    if notification.kind == Notification.Kind.ESCALATED:
        lines.append(f"Escalated from: {_previous_owner(notification)}, who did not decide in time")
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
    return Message(
        kind=notification.kind,
        role=role.name,
        recipients=recipients(notification, members),
        subject=header_safe(f"[Countersign] {title}: {request.summary}"),
        body="\n".join(lines),
        url=url,
        slack_webhook=role.slack_webhook,
    )


def compose_digest(group: list[Notification], members: Members | None = None) -> Message:
    """One message for ``group``: notifications of one kind to the same
    people (one role, or one requester). Each request is listed with what a
    reviewer triages by (summary, action, level, deadline or outcome) and
    its link; the message's own link is the inbox."""
    first = group[0]
    kind, role = first.kind, first.role
    inbox = settings.SITE_URL.rstrip("/") + "/"
    lines = [_digest_intro(first, len(group)), ""]
    for notification in group:
        request = notification.request
        facts = [request.action, f"level {notification.level} of {len(request.levels)}"]
        if kind == Notification.Kind.ESCALATED:
            facts.append(f"from {_previous_owner(notification)}")
        if kind in (Notification.Kind.OUTCOME, Notification.Kind.TICKET):
            facts.append(f"ended {request.status}")
        elif request.due_at:
            facts.append(f"decide by {request.due_at:%Y-%m-%d %H:%M:%S} UTC")
        lines += [
            f"- {header_safe(request.summary, 160)}",
            f"  {' · '.join(facts)}",
            f"  {_request_url(notification)}",
        ]
    lines += [
        "",
        f"Your inbox: {inbox}",
        "(The links only open pages; decisions are made there, after you log in.)",
    ]
    return Message(
        kind=kind,
        role=role.name,
        recipients=recipients(first, members),
        subject=header_safe(
            f"[Countersign] {DIGEST_SUBJECTS[kind].format(count=len(group))}", limit=200
        ),
        body="\n".join(lines),
        url=inbox,
        slack_webhook=role.slack_webhook,
    )


def grouped(batch: list[Notification]) -> list[list[Notification]]:
    """``batch`` as the messages to send (``compose_group`` each): the
    notifications of a digest together, at most ``DIGEST_MOST`` to one,
    every other one alone."""
    alike: dict[tuple, list[Notification]] = {}
    for notification in batch:
        alike.setdefault(_digest_key(notification), []).append(notification)
    digests, alone = [], []
    for group in alike.values():
        if len(group) >= DIGEST_FROM:
            digests += [group[n : n + DIGEST_MOST] for n in range(0, len(group), DIGEST_MOST)]
        else:
            alone += [[notification] for notification in group]
    return digests + alone


def compose_group(group: list[Notification], members: Members | None = None) -> Message:
    """The message for one group of ``grouped``: a digest, or one request's."""
    return compose(group[0], members) if len(group) == 1 else compose_digest(group, members)


def _digest_key(notification: Notification) -> tuple:
    """Notifications with the same key go to the same people about the same
    kind of event, through the same channels (a retry, to those that have
    not taken it yet): one digest can stand for them all."""
    sent = tuple(sorted(notification.channel_results.items()))
    return (notification.kind, notification.role_id, notification.user_id, sent)


def recipients(notification: Notification, members: Members | None = None) -> list[str]:
    """Who ``notification`` goes to: the requester it names, else its role's
    address, else each member of the role with an address."""
    if notification.user is not None:  # to the requester, not to the role
        return [notification.user.email] if notification.user.email else []
    role = notification.role
    if role.email:
        return [role.email]
    if members is not None and role.pk in members:
        return members[role.pk]
    addresses = [user.email for user in role.members() if user.email]
    if members is not None:
        members[role.pk] = addresses
    return addresses


def header_safe(text: str, limit: int = 200) -> str:
    """One line of printable text: an agent's summary may hold newlines or other
    control characters, which would make a mail subject invalid (header
    injection) and the notification unsendable."""
    cleaned = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    return " ".join(cleaned.split())[:limit]


def _digest_intro(first: Notification, count: int) -> str:
    role = first.role.name
    intros: dict[str, str] = {
        Notification.Kind.NEW: f"{count} new requests wait for a decision by {role}:",
        Notification.Kind.ESCALATED: (
            f"{count} requests were escalated to {role}: their previous owners did not decide"
            " in time."
        ),
        Notification.Kind.REMINDER: f"{count} requests owned by {role} are due soon:",
        Notification.Kind.TICKET: (
            f"{count} requests ended without a decision; a manual-review ticket is open for"
            f" {role} on each:"
        ),
        Notification.Kind.OUTCOME: f"{count} requests made on your behalf ended:",
    }
    return intros[first.kind]


def _request_url(notification: Notification) -> str:
    return f"{settings.SITE_URL.rstrip('/')}/requests/{notification.request_id}"


def _previous_owner(notification: Notification) -> str:
    return str(notification.request.levels[notification.level - 2]["role"])


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."
