"""A chunk of the sweep hands its notifications to their lane in one message,
and the lane sends them together (approvals.notifications.send_many): each
still goes to every channel once and keeps its own outcome."""

from __future__ import annotations

from datetime import timedelta

from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import notifications, tasks
from approvals.models import Notification
from tests.helpers import INVOICE


def new_requests(bot, count: int) -> list[int]:
    """The ``new`` notifications of ``count`` fresh requests, unsent."""
    for n in range(count):
        bot.post("/api/v1/requests", {**INVOICE, "summary": f"#{n}"}, format="json")
    return list(Notification.objects.filter(kind="new").order_by("pk").values_list("pk", flat=True))


def test_a_batch_sends_each_notification_with_a_query_count_independent_of_its_size(bot):
    few = new_requests(bot, 3)
    with CaptureQueriesContext(connection) as small:
        assert notifications.send_many(few) == []
    mail.outbox.clear()
    many = [pk for pk in new_requests(bot, 15) if pk not in few]
    with CaptureQueriesContext(connection) as large:
        assert notifications.send_many(many) == []

    assert len(large) == len(small)
    assert len(mail.outbox) == 15
    assert {tuple(m.to) for m in mail.outbox} == {("maria@example.com", "tom@example.com")}
    assert {m.subject.rsplit(": ", 1)[1] for m in mail.outbox} == {f"#{n}" for n in range(15)}
    assert not Notification.objects.filter(sent_at__isnull=True).exists()


def test_a_notification_sent_already_or_held_elsewhere_is_skipped(bot):
    sent, held, free = new_requests(bot, 3)
    assert notifications.send(sent)
    Notification.objects.filter(pk=held).update(locked_until=timezone.now() + timedelta(seconds=30))
    mail.outbox.clear()

    assert notifications.send_many([sent, held, free]) == []

    [message] = mail.outbox
    assert message.subject.endswith("#2")
    assert Notification.objects.get(pk=held).sent_at is None


def test_a_failing_channel_fails_its_notification_alone(bot, settings):
    settings.EMAIL_BACKEND = "tests.test_notify_batch.RefusesNumberOne"
    ids = new_requests(bot, 3)

    assert notifications.send_many(ids) == []

    assert sorted(m.subject[-2:] for m in mail.outbox) == ["#0", "#2"]
    failed = Notification.objects.get(pk=ids[1])
    assert failed.sent_at is None and "refused #1" in failed.last_error
    assert failed.locked_until is None and failed.attempts == 1  # retried by the outbox sweep


def test_an_outcome_is_not_written_over_a_lease_that_ran_out(bot, monkeypatch):
    # The batch took so long that its lease ran out and another sender took
    # the row: that one's outcome is the one to keep.
    [pk] = new_requests(bot, 1)
    theirs = timezone.now() + timedelta(minutes=5)
    deliver = notifications._deliver

    def slow(notification, message):
        Notification.objects.filter(pk=pk).update(locked_until=theirs)
        return deliver(notification, message)

    monkeypatch.setattr(notifications, "_deliver", slow)
    assert notifications.send_many([pk]) == []

    row = Notification.objects.get(pk=pk)
    assert (row.sent_at, row.locked_until) == (None, theirs)


def test_a_batch_out_of_time_hands_the_rest_to_tasks_of_their_own(bot, monkeypatch):
    monkeypatch.setattr(notifications, "BATCH_BUDGET", timedelta(0))
    handed: list[tuple] = []
    monkeypatch.setattr(tasks.send_notification, "delay", lambda *args: handed.append(args))
    ids = new_requests(bot, 2)

    assert tasks.fan_out_notifications(ids) == 0

    assert mail.outbox == [] and [pk for pk, _ in handed] == ids
    for pk, lease in handed:
        assert notifications.send(pk) is False  # still the batch's
        assert notifications.send(pk, lease=tasks._moment(lease)) is True
    assert len(mail.outbox) == 2


class RefusesNumberOne(EmailBackend):
    def send_messages(self, messages):
        if any(message.subject.endswith("#1") for message in messages):
            raise ConnectionRefusedError("refused #1")
        return super().send_messages(messages)
