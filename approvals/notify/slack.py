from __future__ import annotations

import json
import urllib.request

from django.conf import settings

from approvals.notify import Message


class SlackWebhookChannel:
    """Posts to a Slack incoming webhook (``APPROVALS_SLACK_WEBHOOK_URL``).

    The message carries a link to the request's page and no buttons: decisions
    are made on the page, by someone whose role owns the request.
    """

    def send(self, message: Message) -> None:
        url = getattr(settings, "APPROVALS_SLACK_WEBHOOK_URL", "")
        if not url:
            return
        text = f"*{message.subject}*\n{message.body}"
        request = urllib.request.Request(
            url,
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
