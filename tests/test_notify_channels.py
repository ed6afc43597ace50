"""Notification channels are pluggable; the Slack incoming-webhook one posts to
a real local HTTP server here."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail

from approvals import notifications
from approvals.models import Notification
from approvals.notify import channels
from tests.helpers import INVOICE


class _Received(list):
    answers: list[int]


@pytest.fixture
def slack_server():
    received: _Received = _Received()
    answers: list[int] = []  # statuses to answer first (then 200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(answers.pop(0) if answers else 200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.answers = answers
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


@pytest.fixture
def with_slack(settings, slack_server):
    url, received = slack_server
    settings.APPROVALS_NOTIFICATION_CHANNELS = [
        "approvals.notify.slack.SlackWebhookChannel",
        "approvals.notify.email.EmailChannel",
    ]
    settings.APPROVALS_SLACK_WEBHOOK_URL = url
    channels.cache_clear()
    yield received
    channels.cache_clear()


def test_a_new_request_is_posted_to_slack_with_a_link_and_no_buttons(with_slack, invoice):
    notification = Notification.objects.get(request_id=invoice["id"], kind="new")

    assert notifications.send(notification.pk) is True

    [message] = with_slack
    assert "Approval needed: INV-1042 is $1,240 over PO-77" in message["text"]
    assert f"/requests/{invoice['id']}" in message["text"]
    assert set(message) == {"text"}  # a link to the page, never an approve button


def test_a_failing_channel_neither_blocks_nor_resends_the_others(with_slack, invoice):
    with_slack.answers.append(503)  # Slack is down for the first attempt
    notification = Notification.objects.get(request_id=invoice["id"], kind="new")

    assert notifications.send(notification.pk) is False
    assert len(mail.outbox) == 1  # the mail went out although Slack, before it, failed
    notification.refresh_from_db()
    assert notification.sent_at is None and "503" in notification.last_error

    Notification.objects.filter(pk=notification.pk).update(locked_until=None)
    assert notifications.send(notification.pk) is True
    assert len(with_slack) == 2 and len(mail.outbox) == 1  # the retry did not mail again


def test_a_burst_is_one_slack_post_and_a_retry_posts_only_where_it_failed(with_slack, bot):
    # Slack answers a webhook posting faster than about once a second with
    # 429: a burst must not be a post per request.
    for n in range(6):
        bot.post("/api/v1/requests", {**INVOICE, "summary": f"<!channel> #{n}"}, format="json")
    ids = list(Notification.objects.filter(kind="new").values_list("pk", flat=True))
    with_slack.answers.append(429)

    assert notifications.send_many(ids) == []
    assert len(with_slack) == 1 and len(mail.outbox) == 1  # one digest each; Slack refused

    handed = notifications.hand_over_unsent(older_than=timedelta(0))
    assert notifications.send_many(ids, lease=handed[0][1]) == []
    [_, post] = with_slack
    assert len(mail.outbox) == 1  # not mailed again
    assert post["text"].startswith("*[Countersign] 6 approvals needed*")
    assert all(f"&lt;!channel&gt; #{n}" in post["text"] for n in range(6))
    assert "<!channel>" not in post["text"]
    assert not Notification.objects.filter(sent_at__isnull=True).exists()


def test_a_summary_with_newlines_still_makes_a_valid_subject(bot):
    body = {**INVOICE, "summary": "Refund\r\nBcc: everyone@example.com\u2028\t now"}
    created = bot.post("/api/v1/requests", body, format="json").json()
    notification = Notification.objects.get(request_id=created["id"], kind="new")

    assert notifications.send(notification.pk) is True
    [message] = mail.outbox
    assert message.subject == "[Countersign] Approval needed: Refund Bcc: everyone@example.com now"
    assert message.bcc == []


def test_a_role_nobody_can_be_reached_in_is_an_error_not_a_sent_notification(invoice, users):
    for user in users.values():
        user.email = ""
        user.save()
    notification = Notification.objects.get(request_id=invoice["id"], kind="new")

    assert notifications.send(notification.pk) is False
    notification.refresh_from_db()
    assert notification.sent_at is None
    assert "nobody to reach" in notification.last_error
    assert "finance-manager" in notification.last_error
    assert notifications.hand_over_unsent(older_than=timedelta(0)) == []  # retrying cannot help
