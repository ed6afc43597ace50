"""The person an agent asked on behalf of hears when the answer is no."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.core import mail
from django.utils import timezone

from approvals import escalation, notifications
from approvals.models import Notification
from tests.helpers import decide


def send_all() -> None:
    for notification in Notification.objects.filter(sent_at__isnull=True):
        notifications.send(notification.pk)


def test_sam_is_told_when_his_request_is_denied(invoice, maria):
    mail.outbox.clear()
    decide(maria, invoice["id"], "deny", reason="Vendor already paid")
    send_all()
    [message] = [m for m in mail.outbox if m.to == ["sam@example.com"]]
    assert "Your request ended denied" in message.subject
    assert "Reason: Vendor already paid" in message.body


def test_sam_is_told_when_his_request_expires(invoice):
    mail.outbox.clear()
    with time_machine.travel(timezone.now() + timedelta(minutes=31), tick=False):
        escalation.sweep()
    with time_machine.travel(timezone.now() + timedelta(hours=3), tick=False):
        escalation.sweep()
    send_all()
    [message] = [m for m in mail.outbox if m.to == ["sam@example.com"]]
    assert "Your request ended expired" in message.subject


def test_nobody_extra_is_told_of_an_approval(invoice, maria):
    decide(maria, invoice["id"], "approve")
    assert not Notification.objects.filter(kind=Notification.Kind.OUTCOME).exists()


def test_an_unknown_on_behalf_of_is_ignored(bot, maria):
    from tests.helpers import INVOICE

    body = {**INVOICE, "requester": {"on_behalf_of": "nobody-here"}}
    created = bot.post("/api/v1/requests", body, format="json").json()
    decide(maria, created["id"], "deny", reason="no")
    assert not Notification.objects.filter(kind=Notification.Kind.OUTCOME).exists()
