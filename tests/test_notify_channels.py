"""Notification channels are pluggable; the Slack incoming-webhook one posts to
a real local HTTP server here."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from approvals import notifications
from approvals.models import Notification
from approvals.notify import channels


@pytest.fixture
def slack_server():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


@pytest.fixture
def with_slack(settings, slack_server):
    url, received = slack_server
    settings.APPROVALS_NOTIFICATION_CHANNELS = [
        "approvals.notify.email.EmailChannel",
        "approvals.notify.slack.SlackWebhookChannel",
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
