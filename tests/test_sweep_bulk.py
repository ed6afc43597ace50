"""The sweep escalates a chunk of due requests with one set-based statement
(approvals.escalation.escalate_many, the transition idiom applied to a set):
each row still gets its own deadline (its own calendar), its own audit event
chained to its own previous head, and exactly one ownership, notification and
callback; a row that moved on since it was loaded gets nothing; two sweeps
racing over the same rows escalate each exactly once."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from threading import Barrier
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from approvals import audit, escalation, outbox
from approvals.agents import create_agent
from approvals.models import (
    ApprovalRequest,
    AuditEvent,
    DecisionStat,
    Delivery,
    Notification,
    Ownership,
    Ticket,
)
from policies.config import apply_documents, load_yaml
from policies.models import Role
from tests.helpers import INVOICE, agent_client, another_session, decide

# The set-based statement is PostgreSQL's; on SQLite the sweep goes row by row.
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="escalate_many is PostgreSQL's"
)
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = """
kind: Calendar
name: eu-office
timezone: Europe/Berlin
hours: {mon-fri: "09:00-17:30"}
---
kind: ActionClass
name: internal
calendar: eu-office
"""


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def create(bot, count: int, at: datetime) -> list[str]:
    with time_machine.travel(at, tick=False):
        return [
            bot.post("/api/v1/requests", {**INVOICE, "summary": f"#{n}"}, format="json").json()[
                "id"
            ]
            for n in range(count)
        ]


def loaded(ids: list[str]) -> list[ApprovalRequest]:
    return list(
        ApprovalRequest.objects.filter(pk__in=ids).select_related(
            "owner_role", "policy_version__policy", "agent"
        )
    )


def race(ids: list[str], at: datetime, step) -> list[int]:
    """Two sweeps load the same rows, then both run ``step(rows)`` at once,
    each in its own transaction; what each returned."""
    start = Barrier(2)

    def sweep(_: int) -> int:
        try:
            rows = loaded(ids)  # both load every row before either writes
            start.wait()
            with transaction.atomic():
                return step(rows)
        finally:
            connection.close()

    with time_machine.travel(at, tick=False), ThreadPoolExecutor(2) as pool:
        return list(pool.map(sweep, range(2)))


def kinds(request_id: str) -> list[str]:
    events = AuditEvent.objects.filter(request_id=request_id).order_by("seq")
    return list(events.values_list("kind", flat=True))


def test_one_sweep_escalates_each_row_once_under_its_own_calendar(config, bot):
    apply_documents(load_yaml(OFFICE), author="tests")
    ids = create(bot, 40, berlin(2026, 12, 4, 16, 0))  # a Friday; due 16:30 either way
    wall_clock = ids[::2]
    ApprovalRequest.objects.filter(pk__in=wall_clock).update(calendar=None)

    with time_machine.travel(berlin(2026, 12, 4, 16, 31), tick=False):
        result = escalation.sweep()

    assert result.escalated == 40
    for request in ApprovalRequest.objects.filter(pk__in=ids):
        assert (request.level, request.owner_role.name) == (2, "cfo")
        if str(request.pk) in wall_clock:  # 2 h of wall-clock time
            assert request.due_at == berlin(2026, 12, 4, 18, 31)
        else:  # 59 open minutes on Friday, 61 on Monday
            assert request.due_at == berlin(2026, 12, 7, 10, 1)
        event = AuditEvent.objects.get(request=request, kind="escalated")
        assert event.data["due_at"] == request.due_at.isoformat().replace("+00:00", "Z")
        assert (event.seq, event.hash) == (request.audit_seq, request.audit_head)
    assert Ownership.objects.filter(request_id__in=ids, level=2).count() == 40
    escalated = Notification.objects.filter(request_id__in=ids, kind="escalated")
    assert sorted(str(n.request_id) for n in escalated) == sorted(ids)
    assert {n.role.name for n in escalated} == {"cfo"}
    assert list(audit.verify()) == []


@postgresql_only
def test_a_sweep_asks_the_database_as_often_for_25_rows_as_for_5(config, bot):
    # The sweep loads only what escalating reads; a field read per row that
    # it did not load would cost one more query per row.
    def queries(count: int, created: datetime) -> int:
        create(bot, count, created)
        with (
            time_machine.travel(created + timedelta(minutes=31), tick=False),
            CaptureQueriesContext(connection) as captured,
        ):
            assert escalation.sweep().escalated == count
        return len(captured)

    assert queries(5, berlin(2026, 12, 4, 10, 0)) == queries(25, berlin(2026, 12, 4, 10, 40))


@postgresql_only
def test_rows_that_moved_on_since_they_were_loaded_get_nothing(config, bot, maria):
    ids = create(bot, 5, berlin(2026, 12, 4, 10, 0))
    stale = loaded(ids)
    decided, claimed = ids[0], ids[1]
    with time_machine.travel(berlin(2026, 12, 4, 10, 5), tick=False):
        assert decide(maria, decided, "approve").status_code == 200
        assert maria.post(f"/api/v1/requests/{claimed}/claim").status_code == 200

    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        roles = {role.name: role for role in Role.objects.all()}
        assert escalation.escalate_many(stale, roles) == 3
        # The claimed one is still due at level 1 (its head moved), and the sweep gets it.
        assert escalation.sweep().escalated == 1

    assert kinds(decided) == ["created", "approved"]
    assert kinds(claimed) == ["created", "claimed", "escalated"]
    assert all(kinds(i) == ["created", "escalated"] for i in ids[2:])
    assert not Notification.objects.filter(request_id=decided, kind="escalated").exists()
    assert Notification.objects.filter(request_id__in=ids, kind="escalated").count() == 4
    assert list(audit.verify()) == []


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_racing_over_the_same_rows_escalate_each_once(config):
    watcher = agent_client(
        create_agent("watcher", callback_url="http://127.0.0.1:9/hook", subscribe_escalations=True)
    )
    ids = create(watcher, 60, berlin(2026, 12, 4, 10, 0))
    roles = {role.name: role for role in Role.objects.all()}

    counts = race(
        ids, berlin(2026, 12, 4, 10, 31), lambda rows: escalation.escalate_many(rows, roles)
    )

    assert sum(counts) == 60
    for request_id in ids:
        assert kinds(request_id) == ["created", "escalated"]
    assert Ownership.objects.filter(request_id__in=ids, level=2).count() == 60
    assert Notification.objects.filter(request_id__in=ids, kind="escalated").count() == 60
    callbacks = Delivery.objects.filter(request_id__in=ids, event_type="approval.escalated")
    assert sorted(str(d.request_id) for d in callbacks) == sorted(ids)
    assert list(audit.verify()) == []


@postgresql_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch", [1000, 40])  # one load; loads while the writer writes
def test_a_sweep_shares_its_chunks_between_two_connections_each_row_once(
    config, monkeypatch, batch
):
    # While one connection writes and commits a chunk, the other thread's
    # Python prepares the next: the rows of a batch, each in exactly one.
    watcher = agent_client(
        create_agent("watcher", callback_url="http://127.0.0.1:9/hook", subscribe_escalations=True)
    )
    ids = create(watcher, 180, berlin(2026, 12, 4, 10, 0))
    threads: set[str] = set()
    handle_chunk = escalation._handle_chunk

    def noted(rows, roles, counts, *, bulk):
        threads.add(threading.current_thread().name)
        return handle_chunk(rows, roles, counts, bulk=bulk)

    monkeypatch.setattr(escalation, "_handle_chunk", noted)
    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        assert escalation.sweep(batch=batch).escalated == 180

    assert len(threads) == 2
    assert all(kinds(request_id) == ["created", "escalated"] for request_id in ids)
    assert Ownership.objects.filter(request_id__in=ids, level=2).count() == 180
    assert Notification.objects.filter(request_id__in=ids, kind="escalated").count() == 180
    assert (
        Delivery.objects.filter(request_id__in=ids, event_type="approval.escalated").count() == 180
    )
    assert list(audit.verify()) == []


@postgresql_only
def test_a_sweep_with_a_backlog_asks_another_engine_process_for_help(config, bot, monkeypatch):
    sent: list[str] = []
    monkeypatch.setattr(
        "approvals.outbox._enqueue", lambda name, *args, eta=None: sent.append(name)
    )
    create(bot, 5, berlin(2026, 12, 4, 10, 0))

    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        assert escalation.sweep(batch=2).escalated == 5  # a whole batch due: a backlog

    assert "approvals.tasks.help_sweep" in sent


@postgresql_only
def test_a_helper_takes_the_odd_half_of_a_backlog_and_the_sweep_the_even_half(config, bot):
    ids = create(bot, 24, berlin(2026, 12, 4, 10, 0))
    odd = {i for i in ids if uuid.UUID(i).bytes[15] % 2}
    assert 0 < len(odd) < 24  # 24 random ids: both halves (1 in 8 million otherwise)

    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        with another_session() as helper:  # a helper in another process holds its lock
            helper.execute("SELECT pg_advisory_lock(%s)", [escalation.HELPER_LOCK])
            assert escalation.sweep().escalated == 24 - len(odd)
        assert escalation.help_sweep().escalated == len(odd)
        assert escalation.help_sweep() == escalation.SweepResult()  # nothing left

    assert {
        str(pk) for pk in ApprovalRequest.objects.filter(level=2).values_list("pk", flat=True)
    } == set(ids)
    assert all(kinds(request_id) == ["created", "escalated"] for request_id in ids)
    assert list(audit.verify()) == []


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_chunk_hands_its_notifications_to_the_lane_in_one_message(config, bot, monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(
        "approvals.outbox._enqueue", lambda name, *args, eta=None: sent.append((name, args))
    )
    ids = create(bot, 30, berlin(2026, 12, 4, 10, 0))
    assert outbox.flush()  # the creates' own notifications, published after their commits
    sent.clear()

    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        assert escalation.sweep().escalated == 30

    fanned = [args[0] for name, args in sent if name == "approvals.tasks.fan_out_notifications"]
    notified = sorted(pk for batch in fanned for pk in batch)
    expected = Notification.objects.filter(request_id__in=ids, kind="escalated")
    assert notified == sorted(expected.values_list("pk", flat=True))
    assert len(fanned) < 30
    assert not [name for name, _ in sent if name == "approvals.tasks.send_notification"]


@postgresql_only
def test_a_chunk_that_fails_after_its_statement_goes_row_by_row_from_the_loaded_state(
    config, monkeypatch
):
    watcher = agent_client(
        create_agent("watcher", callback_url="http://127.0.0.1:9/hook", subscribe_escalations=True)
    )
    ids = create(watcher, 6, berlin(2026, 12, 4, 10, 0))
    real, calls = outbox.queue_callback, []

    def fails_once(request, event_type):
        calls.append(request.pk)
        if len(calls) == 1:
            raise RuntimeError("serializer blew up")
        return real(request, event_type)

    monkeypatch.setattr(outbox, "queue_callback", fails_once)
    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        result = escalation.sweep()

    assert (result.escalated, result.failed) == (6, 0)
    assert len(calls) == 1 + 6  # the bulk try that failed, then one per row
    for request in ApprovalRequest.objects.filter(pk__in=ids):
        assert (request.level, request.owner_role.name) == (2, "cfo")
    assert AuditEvent.objects.filter(request_id__in=ids, kind="escalated").count() == 6
    assert Ownership.objects.filter(request_id__in=ids, level=2).count() == 6
    callbacks = Delivery.objects.filter(request_id__in=ids, event_type="approval.escalated")
    assert callbacks.count() == 6
    assert list(audit.verify()) == []


# --- the last level: timeouts (approvals.escalation.time_out_many) ---------------------------

REFUND = {
    "action": "refund.issue",
    "summary": "Refund order 7",
    "context": {"amount": 40.0},
    "payload": {"order": 7},
    "requester": {"on_behalf_of": "sam"},
}


def at_last_level(watcher, invoices: int, refunds: int) -> list[str]:
    """Requests due at their last level by Friday 4 December 2026, 12:35 Berlin:
    invoices (expire, with a ticket) and refunds (deny, no ticket)."""

    def create(body: dict, count: int) -> list[str]:
        return [
            watcher.post("/api/v1/requests", body, format="json").json()["id"] for _ in range(count)
        ]

    with time_machine.travel(berlin(2026, 12, 4, 10, 0), tick=False):
        ids = create(INVOICE, invoices)
    with time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False):
        escalation.sweep()  # to the cfo, due 12:31
    with time_machine.travel(berlin(2026, 12, 4, 12, 20), tick=False):
        return ids + create(REFUND, refunds)  # one level, due 12:35


def story(request_id: str) -> list[tuple[str, list[str]]]:
    events = AuditEvent.objects.filter(request_id=request_id).order_by("seq")
    return [(event.kind, sorted(event.data)) for event in events]


def outbox_of(request_id: str) -> tuple[list[str], list[str]]:
    notes = Notification.objects.filter(request_id=request_id).order_by("pk")
    deliveries = Delivery.objects.filter(request_id=request_id).order_by("pk")
    return list(notes.values_list("kind", flat=True)), [
        d.event_type for d in deliveries if d.event_type != "approval.escalated"
    ]


@pytest.fixture
def watcher(config):
    return agent_client(create_agent("watcher", callback_url="http://127.0.0.1:9/hook"))


@postgresql_only
def test_one_sweep_ends_each_row_with_the_story_one_at_a_time_would_write(watcher):
    ids = at_last_level(watcher, invoices=6, refunds=4)
    invoices, refunds = ids[:6], ids[6:]
    # The reference: one invoice and one refund ended by time_out, row by row.
    with time_machine.travel(berlin(2026, 12, 4, 12, 36), tick=False):
        for reference in (invoices[0], refunds[0]):
            assert escalation.time_out(loaded([reference])[0])
        result = escalation.sweep()

    assert result.finished == 8
    for group, outcome in ((invoices, "expired"), (refunds, "denied")):
        expected_story, expected_outbox = story(group[0]), outbox_of(group[0])
        for request_id in group[1:]:
            assert story(request_id) == expected_story
            assert outbox_of(request_id) == expected_outbox
        for request in ApprovalRequest.objects.filter(pk__in=group):
            assert request.status == outcome and request.due_at is None
            assert request.decided_by == {"system": "timeout"}
            last = AuditEvent.objects.filter(request=request).latest("seq")
            assert (last.seq, last.hash) == (request.audit_seq, request.audit_head)
            late = AuditEvent.objects.get(request=request, kind=outcome).data["late_seconds"]
            assert late > 0
    assert [kind for kind, _ in story(invoices[3])][-2:] == ["expired", "ticket_opened"]
    notes, callbacks = outbox_of(invoices[3])
    assert (notes, callbacks) == (["new", "escalated", "outcome", "ticket"], ["approval.expired"])
    assert Ticket.objects.filter(request_id__in=invoices).count() == 6
    assert not Ticket.objects.filter(request_id__in=refunds).exists()
    for delivery in Delivery.objects.filter(request_id__in=ids, event_type="approval.expired"):
        ticket = Ticket.objects.get(request_id=delivery.request_id)
        body = json.loads(delivery.body)["data"]
        assert body["ticket"] == {"id": str(ticket.pk), "status": "open"}
        assert body["decision"]["outcome"] == "expired"
    for delivery in Delivery.objects.filter(request_id__in=ids, event_type="approval.denied"):
        assert json.loads(delivery.body)["data"]["ticket"] is None
    assert sum(DecisionStat.objects.filter(timed_out=True).values_list("count", flat=True)) == 10
    assert list(audit.verify()) == []


@postgresql_only
def test_rows_decided_or_cancelled_since_they_were_loaded_do_not_time_out(watcher, carol):
    ids = at_last_level(watcher, invoices=5, refunds=0)
    stale = loaded(ids)
    decided, cancelled = ids[0], ids[1]
    with time_machine.travel(berlin(2026, 12, 4, 12, 30), tick=False):
        assert decide(carol, decided, "approve").status_code == 200
        assert watcher.post(f"/api/v1/requests/{cancelled}/cancel").status_code == 200

    with time_machine.travel(berlin(2026, 12, 4, 12, 36), tick=False):
        assert escalation.time_out_many(stale) == 3

    assert [kind for kind, _ in story(decided)] == ["created", "escalated", "approved"]
    assert [kind for kind, _ in story(cancelled)] == ["created", "escalated", "cancelled"]
    assert outbox_of(decided)[1] == ["approval.approved"]
    assert not Notification.objects.filter(request_id__in=ids[:2], kind="ticket").exists()
    assert Notification.objects.filter(request_id__in=ids, kind="ticket").count() == 3
    assert list(audit.verify()) == []


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_racing_over_the_same_last_level_end_each_once(config):
    watcher = agent_client(create_agent("watcher", callback_url="http://127.0.0.1:9/hook"))
    ids = at_last_level(watcher, invoices=30, refunds=30)

    counts = race(ids, berlin(2026, 12, 4, 12, 36), escalation.time_out_many)

    assert sum(counts) == 60
    assert Ticket.objects.filter(request_id__in=ids).count() == 30
    for request_id in ids:
        assert len([kind for kind, _ in story(request_id) if kind in ("expired", "denied")]) == 1
        assert len(outbox_of(request_id)[1]) == 1
    assert list(audit.verify()) == []


@postgresql_only
def test_a_timeout_chunk_that_fails_after_its_statement_goes_row_by_row(watcher, monkeypatch):
    ids = at_last_level(watcher, invoices=4, refunds=2)

    def blows_up(requests, event_types):
        raise RuntimeError("serializer blew up")

    monkeypatch.setattr(outbox, "queue_callbacks", blows_up)
    with time_machine.travel(berlin(2026, 12, 4, 12, 36), tick=False):
        result = escalation.sweep()

    assert (result.finished, result.failed) == (6, 0)
    assert Ticket.objects.filter(request_id__in=ids).count() == 4
    for request_id in ids:
        assert len(outbox_of(request_id)[1]) == 1
        assert len([kind for kind, _ in story(request_id) if kind in ("expired", "denied")]) == 1
    assert list(audit.verify()) == []
