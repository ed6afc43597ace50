"""A chunk of the sweep hands its notifications to their lane in one message,
and the lane sends them together (approvals.notifications.send_many): each
still goes to every channel once, and many to the same people go as one
digest (approvals.messages) that lists each request."""

from __future__ import annotations

from datetime import timedelta

from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import escalation, messages, notifications, tasks
from approvals.models import Notification
from tests.helpers import INVOICE, after, another_session

EMAIL = "approvals.notify.email.EmailChannel"


def new_requests(bot, count: int) -> list[int]:
    """The ``new`` notifications of ``count`` fresh requests, unsent."""
    for n in range(count):
        bot.post("/api/v1/requests", {**INVOICE, "summary": f"#{n}"}, format="json")
    return list(Notification.objects.filter(kind="new").order_by("pk").values_list("pk", flat=True))


def test_a_batch_costs_the_same_queries_whatever_its_size(bot):
    few = new_requests(bot, 3)
    with CaptureQueriesContext(connection) as small:
        assert notifications.send_many(few) == []
    assert len(mail.outbox) == 3  # fewer than DIGEST_FROM: one mail each
    mail.outbox.clear()
    many = [pk for pk in new_requests(bot, 15) if pk not in few]
    with CaptureQueriesContext(connection) as large:
        assert notifications.send_many(many) == []

    assert len(large) == len(small)
    assert not Notification.objects.filter(sent_at__isnull=True).exists()


def test_many_to_the_same_people_go_as_one_digest_that_lists_each_request(bot):
    ids = new_requests(bot, 15)

    assert notifications.send_many(ids) == []

    [digest] = mail.outbox
    assert digest.to == ["maria@example.com", "tom@example.com"]
    assert digest.subject == "[Countersign] 15 approvals needed"
    requests = Notification.objects.filter(pk__in=ids).values_list("request_id", flat=True)
    assert all(f"- #{n}\n" in digest.body for n in range(15))
    assert all(f"/requests/{request_id}\n" in digest.body for request_id in requests)
    assert "Your inbox: http://127.0.0.1:8000/\n" in digest.body
    sent = Notification.objects.filter(pk__in=ids)
    assert all(row.channel_results == {EMAIL: "sent"} for row in sent)
    assert all(row.sent_at and row.locked_until is None and row.attempts == 1 for row in sent)


def test_a_digest_lists_a_bounded_number_of_requests(bot, monkeypatch):
    monkeypatch.setattr(messages, "DIGEST_MOST", 6)
    ids = new_requests(bot, 15)

    assert notifications.send_many(ids) == []

    assert sorted(m.subject for m in mail.outbox) == [
        "[Countersign] 3 approvals needed",
        "[Countersign] 6 approvals needed",
        "[Countersign] 6 approvals needed",
    ]
    assert sum(m.body.count("\n- #") for m in mail.outbox) == 15
    assert not Notification.objects.filter(sent_at__isnull=True).exists()


def test_a_digest_that_fails_leaves_each_of_its_notifications_to_be_retried(bot, settings):
    settings.EMAIL_BACKEND = "tests.test_notify_batch.RefusesDigests"
    ids = new_requests(bot, 6)

    assert notifications.send_many(ids) == []

    assert mail.outbox == []
    for row in Notification.objects.filter(pk__in=ids):
        assert row.sent_at is None and "refused a digest" in row.last_error
        assert row.locked_until is None and row.attempts == 1
    # The outbox sweep hands them on together: a digest again.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    handed = notifications.hand_over_unsent(older_than=timedelta(0))
    assert sorted(pk for pk, _ in handed) == sorted(ids)
    assert tasks.fan_out_notifications(ids, handed[0][1].isoformat()) == 6
    [digest] = mail.outbox
    assert digest.subject == "[Countersign] 6 approvals needed"
    assert not Notification.objects.filter(pk__in=ids, sent_at__isnull=True).exists()


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


class RefusesDigests(EmailBackend):
    def send_messages(self, messages):
        if any("approvals needed" in message.subject for message in messages):
            raise ConnectionRefusedError("refused a digest")
        return super().send_messages(messages)


class RefusesNumberOne(EmailBackend):
    def send_messages(self, messages):
        if any(message.subject.endswith("#1") for message in messages):
            raise ConnectionRefusedError("refused #1")
        return super().send_messages(messages)


def test_a_sweeps_notifications_wait_for_the_sweep_to_end(bot, monkeypatch):
    # In a burst the sweep and the notifications lane share the cores: the
    # escalations go first, their notifications right after.
    ids = new_requests(bot, 2)
    with another_session() as sweep:
        sweep.execute("SELECT pg_advisory_lock(%s)", [escalation.SWEEP_LOCK])
        sent_while_sweeping = []

        def the_sweep_ends(seconds):
            sent_while_sweeping.append(len(mail.outbox))
            sweep.execute("SELECT pg_advisory_unlock(%s)", [escalation.SWEEP_LOCK])

        monkeypatch.setattr(notifications.time, "sleep", the_sweep_ends)
        assert tasks.fan_out_notifications(ids, None, timezone.now().isoformat()) == 2

    assert sent_while_sweeping == [0]
    assert len(mail.outbox) == 2


def test_a_sweep_that_does_not_end_holds_its_notifications_back_two_seconds_at_most(
    bot, monkeypatch, clock
):
    ids = new_requests(bot, 2)
    with another_session() as helper:  # a helper sweep counts as a sweep
        helper.execute("SELECT pg_advisory_lock(%s)", [escalation.HELPER_LOCK])
        looks = []

        def look_again(seconds):
            looks.append(seconds)
            after(clock, seconds=0.5)

        monkeypatch.setattr(notifications.time, "sleep", look_again)
        assert tasks.fan_out_notifications(ids, None, timezone.now().isoformat()) == 2
        assert len(looks) == 4 and len(mail.outbox) == 2  # sent, the sweep still running

        # Written "in the future" (the engine's clock is ahead): the same bound.
        mail.outbox.clear()
        Notification.objects.update(sent_at=None, channel_results={})
        written = timezone.now() + timedelta(minutes=5)
        assert tasks.fan_out_notifications(ids, None, written.isoformat()) == 2
        assert len(looks) == 8 and len(mail.outbox) == 2

        # Written longer ago than that (the lane runs behind): sent at once.
        mail.outbox.clear()
        Notification.objects.update(sent_at=None, channel_results={})
        written = timezone.now() - notifications.AFTER_SWEEPS_FOR
        assert tasks.fan_out_notifications(ids, None, written.isoformat()) == 2
        assert len(looks) == 8 and len(mail.outbox) == 2
