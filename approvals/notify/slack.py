from __future__ import annotations

import json

from django.conf import settings

from approvals import outbound
from approvals.notify import Message

TIMEOUT = 10.0  # seconds for the whole post, whatever Slack (or a stand-in) does


def escape(text: str) -> str:
    """Slack's own escaping for message text: agent-written text cannot ping
    (``<!channel>``, ``<@U123>``) or show a link under a disguise
    (``<http://evil|bank.com>``); Slack shows the characters as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackWebhookChannel:
    """Posts to the owning role's Slack channel (its incoming webhook, set in the
    admin), else to ``APPROVALS_SLACK_WEBHOOK_URL``: an escalation lands in the
    new role's channel, not the old one's.

    The message carries a link to the request's page and no buttons: decisions
    are made on the page, by someone whose role owns the request. It goes out
    through approvals.outbound like a callback: bounded in time, redirects not
    followed, the address checked.
    """

    def send(self, message: Message) -> None:
        url = message.slack_webhook or getattr(settings, "APPROVALS_SLACK_WEBHOOK_URL", "")
        if not url:
            return
        text = f"*{escape(message.subject)}*\n{escape(message.body)}"
        result = outbound.post(
            url,
            json.dumps({"text": text}).encode(),
            {"Content-Type": "application/json"},
            allow_private=settings.APPROVALS_ALLOW_PRIVATE_CALLBACKS,
            timeout=TIMEOUT,
        )
        if not result.ok:
            raise OSError(f"Slack answered {result.status or result.error}: {result.excerpt[:200]}")
