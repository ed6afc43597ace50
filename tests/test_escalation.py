"""Deadlines fire: escalation to the fallback role, the terminal outcome after
the last level, tickets, reminders. The clock is moved with time_machine; the
engine runs in-process here (tests/test_engine_processes.py runs it for real)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals import escalation, notifications, timers
from approvals.models import ApprovalRequest, AuditEvent, Delivery, Notification, Ticket
from approvals.tasks import set_deadline_timers
from policies.config import apply_documents, load_yaml
from tests.helpers import INVOICE, after, agent_client, another_session, decide


@contextmanager
def other_sweep_running():
    """The sweep's lock, held by another connection (another worker's sweep)."""
    with another_session() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [escalation.SWEEP_LOCK])
        yield


def events(request_id) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(request_id=request_id).order_by("seq"))


@pytest.fixture
def subscribed_bot(config):
    from approvals.agents import create_agent

    credentials = create_agent(
        "watcher", callback_url="http://127.0.0.1:9/hook", subscribe_escalations=True
    )
    return agent_client(credentials)


class TestEscalation:
    def test_a_missed_deadline_hands_the_request_to_the_cfo(self, clock, bot, invoice):
        after(clock, minutes=30, seconds=1)

        result = escalation.sweep()

        assert result.escalated == 1
        body = bot.get(f"/api/v1/requests/{invoice['id']}").json()
        assert (body["level"], body["owner_role"], body["status"]) == (2, "cfo", "pending")
        assert parse_datetime(body["due_at"]) == timezone.now() + timedelta(hours=2)

    def test_the_escalation_is_audited_with_who_from_whom_and_how_late(self, clock, invoice):
        after(clock, minutes=30, seconds=3)
        escalation.sweep()

        event = events(invoice["id"])[-1]
        assert event.kind == "escalated"
        assert event.data["from_role"] == "finance-manager"
        assert event.data["to_role"] == "cfo"
        assert event.data["late_seconds"] == 3.0
        assert event.context["vendor"] == "Acme"
        assert (event.role, event.level) == ("cfo", 2)

    def test_the_previous_role_can_read_but_no_longer_decide(self, clock, invoice, maria, carol):
        after(clock, minutes=31)
        escalation.sweep()

        assert decide(maria, invoice["id"], "approve").status_code == 403
        assert decide(carol, invoice["id"], "approve").json()["status"] == "approved"

    def test_a_claim_ends_on_escalation(self, clock, invoice, maria):
        maria.post(f"/api/v1/requests/{invoice['id']}/claim")
        after(clock, minutes=31)
        escalation.sweep()
        assert ApprovalRequest.objects.get(pk=invoice["id"]).claimed_by is None

    def test_the_new_role_is_notified(self, clock, invoice):
        after(clock, minutes=31)
        escalation.sweep()
        notification = Notification.objects.get(request_id=invoice["id"], kind="escalated")
        assert notification.role.name == "cfo"

    def test_a_second_sweep_changes_nothing(self, clock, invoice):
        after(clock, minutes=31)
        escalation.sweep()
        assert escalation.sweep().escalated == 0
        kinds = [e.kind for e in events(invoice["id"])]
        assert kinds.count("escalated") == 1

    def test_requests_not_yet_due_are_left_alone(self, clock, invoice):
        after(clock, minutes=29)
        assert escalation.sweep() == escalation.SweepResult()
        assert ApprovalRequest.objects.get(pk=invoice["id"]).level == 1

    def test_a_subscribed_agent_gets_an_escalated_event_queued(self, clock, subscribed_bot):
        created = subscribed_bot.post("/api/v1/requests", INVOICE, format="json").json()
        after(clock, minutes=31)
        escalation.sweep()
        [delivery] = Delivery.objects.filter(request_id=created["id"])
        assert delivery.event_type == "approval.escalated"
        assert delivery.url == "http://127.0.0.1:9/hook"

    def test_an_unsubscribed_agent_is_not_told_of_escalations(self, clock, config):
        from approvals.agents import create_agent

        quiet = agent_client(create_agent("quiet", callback_url="http://127.0.0.1:9/hook"))
        created = quiet.post("/api/v1/requests", INVOICE, format="json").json()
        after(clock, minutes=31)
        escalation.sweep()
        assert not Delivery.objects.filter(request_id=created["id"]).exists()


class TestTimeout:
    """The seed's finance case: manager 30 min, CFO 2 h, then expired with a ticket."""

    def test_after_the_last_level_it_expires_with_a_ticket_and_the_agent_told(
        self, clock, subscribed_bot
    ):
        created = subscribed_bot.post("/api/v1/requests", INVOICE, format="json").json()
        after(clock, minutes=30, seconds=1)
        escalation.sweep()
        after(clock, hours=2, seconds=1)

        assert escalation.sweep().finished == 1

        body = subscribed_bot.get(f"/api/v1/requests/{created['id']}").json()
        assert body["status"] == "expired"
        assert body["due_at"] is None
        assert body["decision"]["by"] == {"system": "timeout"}
        ticket = Ticket.objects.get(request_id=created["id"])
        assert body["ticket"] == {"id": str(ticket.pk), "status": "open"}
        assert ticket.role.name == "cfo"
        kinds = [e.kind for e in events(created["id"])]
        assert kinds == ["created", "escalated", "expired", "ticket_opened"]
        types = list(
            Delivery.objects.filter(request_id=created["id"])
            .order_by("created_at")
            .values_list("event_type", flat=True)
        )
        assert types == ["approval.escalated", "approval.expired"]
        expired = Delivery.objects.get(request_id=created["id"], event_type="approval.expired")
        told = json.loads(expired.body)["data"]
        assert (told["status"], told["ticket"]) == (
            "expired",
            {"id": str(ticket.pk), "status": "open"},
        )
        assert Notification.objects.filter(request_id=created["id"], kind="ticket").exists()

    def test_a_late_decision_is_refused_and_kept_for_the_ticket(self, clock, invoice, carol):
        after(clock, minutes=31)
        escalation.sweep()
        after(clock, hours=2, minutes=1)
        escalation.sweep()

        response = decide(carol, invoice["id"], "approve", reason="back from a meeting")

        assert response.status_code == 409
        assert events(invoice["id"])[-1].kind == "late_decision"

    def test_on_timeout_deny_denies(self, clock, bot):
        refund = bot.post(
            "/api/v1/requests", {"action": "refund.issue", "summary": "Refund $40"}, format="json"
        ).json()
        after(clock, minutes=15, seconds=1)
        escalation.sweep()
        body = bot.get(f"/api/v1/requests/{refund['id']}").json()
        assert body["status"] == "denied"
        assert body["decision"]["by"] == {"system": "timeout"}
        assert body["ticket"] is None

    def test_on_timeout_approve_needs_fail_open_and_approves_the_payload(self, clock, config, bot):
        apply_documents(
            load_yaml(
                """
kind: Policy
name: low-risk
priority: 1
rules:
  - name: tiny-credit
    actions: ["credit.tiny"]
    class: internal
    levels: [{role: support-lead, deadline: 5m}]
    on_timeout: approve
    fail_open: true
"""
            ),
            author="tests",
        )
        body = {"action": "credit.tiny", "summary": "$2 credit", "payload": {"credit": 2}}
        created = bot.post("/api/v1/requests", body, format="json").json()
        after(clock, minutes=5, seconds=1)
        escalation.sweep()
        decision = bot.get(f"/api/v1/requests/{created['id']}").json()["decision"]
        assert decision["outcome"] == "approved"
        assert decision["by"] == {"system": "timeout"}
        assert decision["payload"] == {"credit": 2}


def test_a_row_that_fails_is_logged_pushed_back_and_never_blocks_the_others(clock, bot, caplog):
    broken = bot.post("/api/v1/requests", INVOICE, format="json").json()
    healthy = bot.post("/api/v1/requests", INVOICE, format="json").json()
    ApprovalRequest.objects.filter(pk=broken["id"]).update(
        levels=[{"role": "finance-manager", "deadline": 1800}, {"role": "ghost", "deadline": 60}]
    )
    after(clock, minutes=31)

    result = escalation.sweep()

    assert (result.escalated, result.failed) == (1, 1)
    assert ApprovalRequest.objects.get(pk=healthy["id"]).level == 2
    stuck = ApprovalRequest.objects.get(pk=broken["id"])
    assert stuck.level == 1 and stuck.due_at > timezone.now()
    assert broken["id"] in caplog.text


class TestReminders:
    @pytest.fixture
    def reminded_policy(self, config):
        apply_documents(
            load_yaml(
                """
kind: Policy
name: reminded
priority: 1
rules:
  - name: with-reminder
    actions: ["vendor.onboard"]
    class: internal
    remind: 10m
    levels: [{role: finance-manager, deadline: 30m}, {role: cfo, deadline: 1h}]
"""
            ),
            author="tests",
        )

    def test_the_owning_role_is_reminded_once_before_each_deadline(
        self, clock, bot, reminded_policy
    ):
        created = bot.post(
            "/api/v1/requests", {"action": "vendor.onboard", "summary": "Acme"}, format="json"
        ).json()
        after(clock, minutes=19)
        assert escalation.sweep().reminded == 0
        after(clock, minutes=1, seconds=1)
        assert escalation.sweep().reminded == 1
        assert escalation.sweep().reminded == 0
        after(clock, minutes=10)
        escalation.sweep()  # escalates to the cfo: a new level, a new reminder
        after(clock, minutes=50, seconds=1)
        assert escalation.sweep().reminded == 1

        reminders = Notification.objects.filter(request_id=created["id"], kind="reminder")
        assert [n.role.name for n in reminders.order_by("created_at")] == ["finance-manager", "cfo"]


class TestMail:
    def test_the_escalation_mail_goes_to_the_new_role_with_the_business_context(
        self, clock, invoice
    ):
        after(clock, minutes=31)
        escalation.sweep()
        notification = Notification.objects.get(request_id=invoice["id"], kind="escalated")

        assert notifications.send(notification.pk) is True

        [message] = mail.outbox
        assert message.to == ["carol@example.com"]  # the cfo; not the finance managers
        assert "Escalated to you" in message.subject
        assert "INV-1042 is $1,240 over PO-77" in message.body
        assert "vendor: Acme" in message.body
        assert "Escalated from: finance-manager" in message.body
        assert "Decide by:" in message.body
        assert f"/requests/{invoice['id']}" in message.body

    def test_a_role_with_an_address_gets_one_mail_there(self, invoice):
        from policies.models import Role

        Role.objects.filter(name="finance-manager").update(email="finance@example.com")
        notification = Notification.objects.get(request_id=invoice["id"], kind="new")
        notifications.send(notification.pk)
        assert [m.to for m in mail.outbox] == [["finance@example.com"]]

    def test_a_notification_is_sent_once(self, invoice):
        notification = Notification.objects.get(request_id=invoice["id"], kind="new")
        assert notifications.send(notification.pk) is True
        assert notifications.send(notification.pk) is False
        assert len(mail.outbox) == 1

    def test_a_failed_send_is_kept_for_the_outbox_sweep(self, invoice, settings, clock):
        settings.EMAIL_BACKEND = "tests.test_escalation.FailingBackend"
        notification = Notification.objects.get(request_id=invoice["id"], kind="new")
        assert notifications.send(notification.pk) is False
        notification.refresh_from_db()
        assert notification.sent_at is None and "refused" in notification.last_error
        after(clock, seconds=31)
        assert [pk for pk, _ in notifications.hand_over_unsent()] == [notification.pk]

    def test_the_outbox_sweep_hands_a_late_notification_over_once(self, invoice, clock):
        # Its lane runs behind: the row is handed to one new task, not to one
        # more every ten seconds; the task with the lease sends it, no other.
        notification = Notification.objects.get(request_id=invoice["id"], kind="new")
        after(clock, seconds=31)
        [(pk, lease)] = notifications.hand_over_unsent()
        assert pk == notification.pk
        after(clock, seconds=10)
        assert notifications.hand_over_unsent() == []
        assert notifications.send(pk) is False
        assert mail.outbox == []
        assert notifications.send(pk, lease=lease) is True
        assert len(mail.outbox) == 1
        assert notifications.send(pk, lease=lease) is False


class FailingBackend:
    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("SMTP server refused")


def test_the_ticket_shows_late_decisions_to_its_owners(clock, invoice, carol, root):
    after(clock, minutes=31)
    escalation.sweep()
    after(clock, hours=2, minutes=1)
    escalation.sweep()
    decide(carol, invoice["id"], "approve", reason="back from a meeting")

    ticket = Ticket.objects.get(request_id=invoice["id"])
    page = root.get(f"/admin/approvals/ticket/{ticket.pk}/change/").content.decode()

    assert "carol wanted to approve (back from a meeting)" in page


class TestPreciseTimers:
    """On top of the sweep, timers wake the engine when deadlines fall due; a
    timer only ever calls the same conditional steps, so a late or double
    timer is harmless."""

    def test_a_timer_handles_the_deadline_once(self, clock, invoice):
        after(clock, minutes=30, milliseconds=100)  # on time, as timers go

        assert escalation.fire() == "escalated"
        assert escalation.fire() is None
        assert escalation.sweep().escalated == 0
        assert [e.kind for e in events(invoice["id"])].count("escalated") == 1

    def test_a_timer_that_finds_many_due_sweeps_them(self, clock, bot, invoice):
        # A burst, or a worker that restarted and whose timers go off late:
        # the first one ends every due request in bulk.
        others = [bot.post("/api/v1/requests", INVOICE, format="json").json() for _ in range(3)]
        after(clock, minutes=30, seconds=5)

        assert escalation.fire() == "swept"
        ids = [invoice["id"], *(other["id"] for other in others)]
        levels = ApprovalRequest.objects.filter(pk__in=ids).values_list("level", flat=True)
        assert set(levels) == {2}
        # The others' timers go off too, with nothing left to do: a look each.
        for _ in others:
            with CaptureQueriesContext(connection) as queries:
                assert escalation.fire() is None
            assert len(queries) == 1

    def test_an_early_timer_does_nothing(self, clock, invoice):
        assert escalation.fire() is None
        assert ApprovalRequest.objects.get(pk=invoice["id"]).level == 1

    def test_a_timer_for_a_decided_request_does_nothing(self, clock, invoice, maria):
        decide(maria, invoice["id"], "approve")
        after(clock, minutes=31)
        assert escalation.fire() is None

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks")
    def test_one_sweep_at_a_time(self, clock, invoice):
        after(clock, minutes=31)
        with other_sweep_running():
            assert escalation.sweep() == escalation.SweepResult()  # the beat's: skips
            assert ApprovalRequest.objects.get(pk=invoice["id"]).level == 1
            # A timer does not wait for it: it handles a lone due row itself.
            assert escalation.fire() == "escalated"

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks")
    def test_a_timer_helps_the_sweep_running_with_a_burst(self, clock, bot, invoice):
        # It takes the odd half (by the id's last byte) and leaves the rest
        # to the running sweep.
        for _ in range(11):
            bot.post("/api/v1/requests", INVOICE, format="json")
        ids = list(ApprovalRequest.objects.values_list("pk", flat=True))
        odd = {pk for pk in ids if pk.bytes[15] % 2}
        after(clock, minutes=31)
        with other_sweep_running():
            assert escalation.fire() == ("swept" if odd else None)
        escalated = ApprovalRequest.objects.filter(level=2).values_list("pk", flat=True)
        assert set(escalated) == odd

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="the set-based step")
    def test_a_sweep_looks_again_once_it_lets_go_of_its_lock(
        self, clock, bot, invoice, monkeypatch
    ):
        # What a timer left to it while it held the lock (the test above):
        # here a second request falls due while the sweep escalates the first.
        after(clock, minutes=10)
        later = bot.post("/api/v1/requests", INVOICE, format="json").json()
        after(clock, minutes=21)
        escalate_many = escalation.escalate_many

        def escalate_then_time_passes(requests, roles):
            done = escalate_many(requests, roles)
            after(clock, minutes=10)
            return done

        monkeypatch.setattr(escalation, "escalate_many", escalate_then_time_passes)
        assert escalation.sweep().escalated == 2
        assert ApprovalRequest.objects.get(pk=later["id"]).level == 2

    def test_a_sweep_in_small_batches_takes_each_due_row_once(self, clock, bot, invoice):
        # Seven deadlines in the same microsecond, loaded three at a time:
        # each load starts after the last row of the one before.
        for _ in range(6):
            bot.post("/api/v1/requests", INVOICE, format="json")
        assert ApprovalRequest.objects.values("due_at").distinct().count() == 1
        after(clock, minutes=31)

        assert escalation.sweep(batch=3).escalated == 7
        assert AuditEvent.objects.filter(kind="escalated").count() == 7

    def test_timers_are_set_for_the_next_minute_only(self, clock, bot, config):
        apply_documents(load_yaml(FAST), author="tests")
        soon = bot.post("/api/v1/requests", {"action": "fast.pay", "summary": "s"}, format="json")
        bot.post("/api/v1/requests", INVOICE, format="json")  # due in 30 min: the sweep's
        due_at = ApprovalRequest.objects.get(pk=soon.json()["id"]).due_at
        assert escalation.deadlines_soon(timedelta(seconds=60)) == [due_at]

    def test_a_burst_of_deadlines_is_a_few_timers(
        self, clock, bot, config, monkeypatch, django_capture_on_commit_callbacks
    ):
        apply_documents(load_yaml(FAST), author="tests")
        sent: list[tuple] = []
        monkeypatch.setattr(
            "approvals.outbox._enqueue",
            lambda name, *args, eta=None: sent.append((name, eta)),
        )
        for _ in range(40):  # 40 creates in the same 10 ms: one timer
            with django_capture_on_commit_callbacks(execute=True):
                bot.post("/api/v1/requests", {"action": "fast.pay", "summary": "s"}, format="json")
            after(clock, microseconds=250)
        timers_ = [eta for name, eta in sent if name == "approvals.tasks.fire_deadline"]
        deadlines = ApprovalRequest.objects.values_list("due_at", flat=True)
        assert len(timers_) <= 2  # a second one if the 10 ms straddle a slice
        assert max(deadlines) <= max(timers_) <= max(deadlines) + timers.SLICE
        # Beat's run over the next minute adds none for moments already timed.
        sent.clear()
        assert set_deadline_timers() == 0


FAST = """
kind: Policy
name: fast
priority: 1
rules:
  - name: ten-seconds
    actions: ["fast.*"]
    class: internal
    levels: [{role: finance-manager, deadline: 10s}, {role: cfo, deadline: 1m}]
"""
