"""The Slack channel escapes agent-written text and goes out through
approvals.outbound (bounded, no redirects, address checked), against a real
local HTTP server standing in for Slack."""

from __future__ import annotations

import json
import time

import pytest

from approvals import notifications
from approvals.models import Notification
from approvals.notify import Message, channels
from approvals.notify.slack import SlackWebhookChannel
from tests.helpers import INVOICE
from tests.hostile import HostileReceiver
from tests.receiver import Receiver, Script

HOSTILE = "<!channel> ping <@U024BE7LH>, see <http://evil.example|bank.com> & pay"


@pytest.fixture
def slack(settings):
    with Receiver() as server:
        settings.APPROVALS_NOTIFICATION_CHANNELS = ["approvals.notify.slack.SlackWebhookChannel"]
        settings.APPROVALS_SLACK_WEBHOOK_URL = server.url
        channels.cache_clear()
        yield server
        channels.cache_clear()


def message(**fields) -> Message:
    base = dict(kind="new", role="cfo", recipients=[], subject="s", body="b", url="http://x/r/1")
    return Message(**{**base, **fields})


def test_agent_text_cannot_ping_or_disguise_a_link(slack, bot):
    created = bot.post("/api/v1/requests", {**INVOICE, "summary": HOSTILE}, format="json").json()
    notification = Notification.objects.get(request_id=created["id"], kind="new")

    assert notifications.send(notification.pk) is True

    [posted] = slack.received
    text = json.loads(posted.body)["text"]
    assert "&lt;!channel&gt; ping &lt;@U024BE7LH&gt;" in text
    assert "&lt;http://evil.example|bank.com&gt; &amp; pay" in text
    assert "<" not in text.replace("&lt;", "") and ">" not in text.replace("&gt;", "")


def test_a_redirect_is_not_followed_and_the_send_fails(settings):
    with Receiver() as target, Receiver(Script(statuses=[302], location="")) as slack:
        slack.script.location = target.url
        settings.APPROVALS_SLACK_WEBHOOK_URL = slack.url
        with pytest.raises(OSError, match="302"):
            SlackWebhookChannel().send(message())
    assert target.received == []


def test_a_private_address_is_refused_unless_allowed(settings):
    with Receiver() as slack:
        settings.APPROVALS_SLACK_WEBHOOK_URL = slack.url
        settings.APPROVALS_ALLOW_PRIVATE_CALLBACKS = False
        with pytest.raises(OSError, match="private, loopback"):
            SlackWebhookChannel().send(message())
    assert slack.received == []


def test_a_slack_that_never_answers_is_cut_off(settings, monkeypatch):
    monkeypatch.setattr("approvals.notify.slack.TIMEOUT", 1.0)
    with HostileReceiver("silent") as slack:
        settings.APPROVALS_SLACK_WEBHOOK_URL = slack.url
        started = time.monotonic()
        with pytest.raises(OSError, match="Timeout"):
            SlackWebhookChannel().send(message())
    assert time.monotonic() - started < 1.5


def test_an_escalation_lands_in_the_new_roles_channel(slack, clock, bot):
    from approvals import escalation
    from policies.models import Role
    from tests.helpers import after

    with Receiver() as cfo_channel:
        Role.objects.filter(name="cfo").update(slack_webhook=cfo_channel.url)
        created = bot.post("/api/v1/requests", INVOICE, format="json").json()
        after(clock, minutes=31)
        escalation.sweep()
        new = Notification.objects.get(request_id=created["id"], kind="new")
        escalated = Notification.objects.get(request_id=created["id"], kind="escalated")

        assert notifications.send(new.pk) and notifications.send(escalated.pk)

        [to_finance] = slack.received  # the finance managers' (default) channel
        [to_cfo] = cfo_channel.received
    assert "Approval needed" in json.loads(to_finance.body)["text"]
    assert "Escalated to you" in json.loads(to_cfo.body)["text"]
