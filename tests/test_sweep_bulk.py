"""The sweep escalates a chunk of due requests with one set-based statement
(approvals.escalation.escalate_many, the transition idiom applied to a set):
each row still gets its own deadline (its own calendar), its own audit event
chained to its own previous head, and exactly one ownership, notification and
callback; a row that moved on since it was loaded gets nothing; two sweeps
racing over the same rows escalate each exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from threading import Barrier
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection, transaction

from approvals import audit, escalation, outbox
from approvals.agents import create_agent
from approvals.models import ApprovalRequest, AuditEvent, Delivery, Notification, Ownership
from policies.config import apply_documents, load_yaml
from policies.models import Role
from tests.helpers import INVOICE, agent_client, decide

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
    start = Barrier(2)

    def sweep(_: int) -> int:
        try:
            rows = loaded(ids)  # both load every row before either writes
            roles = {role.name: role for role in Role.objects.all()}
            start.wait()
            with transaction.atomic():
                return escalation.escalate_many(rows, roles)
        finally:
            connection.close()

    with (
        time_machine.travel(berlin(2026, 12, 4, 10, 31), tick=False),
        ThreadPoolExecutor(2) as pool,
    ):
        counts = list(pool.map(sweep, range(2)))

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
