"""The escalation engine for real: Celery worker and beat processes against
real PostgreSQL and Redis, started by the tests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals import escalation
from approvals.models import ApprovalRequest, AuditEvent, DecisionStat
from policies.config import apply_documents, load_yaml
from policies.models import Role
from tests.helpers import FAST_CHAIN, INVOICE, another_session, decide
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def fast_chain(config):
    apply_documents(load_yaml(FAST_CHAIN), author="tests")


def kinds(request_id) -> list[str]:
    return list(
        AuditEvent.objects.filter(request_id=request_id)
        .order_by("seq")
        .values_list("kind", flat=True)
    )


def make_due(count: int, bot) -> list[str]:
    ids = [bot.post("/api/v1/requests", INVOICE, format="json").json()["id"] for _ in range(count)]
    ApprovalRequest.objects.filter(pk__in=ids).update(due_at=timezone.now() - timedelta(seconds=1))
    return ids


def escalated_count(ids) -> int:
    return AuditEvent.objects.filter(request_id__in=ids, kind="escalated").count()


def test_a_2s_plus_2s_chain_escalates_then_expires_on_time(fast_chain, bot, processes):
    processes.worker()
    processes.beat()
    # Let the engine come up before the clock starts, so the lag measured is the engine's.
    wait_for(lambda: "ready" in processes.log("worker"), timeout=60, what="worker ready")
    body = {"action": "fast.pay", "summary": "fast one", "context": {"amount": 5}}
    created = bot.post("/api/v1/requests", body, format="json").json()

    wait_for(
        lambda: ApprovalRequest.objects.get(pk=created["id"]).level == 2,
        timeout=15, what="the escalation",
    )  # fmt: skip
    escalated = AuditEvent.objects.get(request_id=created["id"], kind="escalated")
    assert escalated.data["late_seconds"] < 2.0, escalated.data
    assert escalated.data["to_role"] == "cfo"

    wait_for(
        lambda: ApprovalRequest.objects.get(pk=created["id"]).status == "expired",
        timeout=15, what="the expiry",
    )  # fmt: skip
    assert kinds(created["id"]) == ["created", "escalated", "expired", "ticket_opened"]
    mails = wait_for(
        lambda: list((processes.logs / "mail").glob("*.log")), timeout=15, what="mail files"
    )
    assert any("carol@example.com" in path.read_text() for path in mails)


def test_a_worker_killed_mid_sweep_leaves_every_request_handled_exactly_once(bot, processes):
    ids = make_due(300, bot)
    # The sweep takes the oldest deadlines first: the first 100 commit in its
    # first chunks, and the chunk with the last row waits on a decision
    # holding that row (another connection) when the worker is killed.
    ApprovalRequest.objects.filter(pk__in=ids[100:]).update(
        due_at=timezone.now() - timedelta(seconds=0.5)
    )
    with another_session(autocommit=False) as decision:
        decision.execute(
            "SELECT 1 FROM approvals_approvalrequest WHERE id = %s FOR UPDATE", [ids[-1]]
        )
        processes.worker("first")
        processes.beat()
        wait_for(lambda: _waiting_on_a_row_lock() > 0, timeout=60, what="the sweep to block")
        processes.kill("first")
        partial = escalated_count(ids)
        decision.rollback()

    processes.worker("second")
    wait_for(lambda: escalated_count(ids) == 300, timeout=90, what="all 300 escalations")

    assert 0 < partial < 300
    per_request = AuditEvent.objects.filter(request_id__in=ids, kind="escalated")
    assert per_request.values("request_id").distinct().count() == 300
    assert ApprovalRequest.objects.filter(pk__in=ids, level=2).count() == 300


def _waiting_on_a_row_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_with_redis_down_deadlines_wait_and_are_caught_up_once(bot, processes, redis_server):
    processes.worker()
    processes.beat()
    wait_for(lambda: "ready" in processes.log("worker"), timeout=60, what="worker ready")
    redis_server.stop()
    wait_for(
        lambda: "Connection to broker lost" in processes.log("worker"),
        timeout=30, what="the worker to notice",
    )  # fmt: skip
    ids = make_due(50, bot)
    assert escalated_count(ids) == 0

    redis_server.start()

    wait_for(lambda: escalated_count(ids) == 50, timeout=90, what="the catch-up")
    assert AuditEvent.objects.filter(request_id__in=ids, kind="escalated").count() == 50


def test_two_sweeps_at_once_escalate_each_request_once(bot):
    ids = make_due(60, bot)
    start = threading.Barrier(2)

    def sweep(_):
        start.wait()
        try:
            return escalation.sweep()
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(sweep, range(2)))

    assert sum(r.escalated for r in results) == 60
    assert escalated_count(ids) == 60


def test_a_decision_racing_the_escalation_wins_or_loses_cleanly(bot, maria):
    ids = make_due(40, bot)
    start = threading.Barrier(2)

    def sweep():
        start.wait()
        try:
            escalation.sweep()
        finally:
            connection.close()

    def decide_all():
        start.wait()
        try:
            return {r: decide(maria, r, "approve").status_code for r in ids}
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        swept = pool.submit(sweep)
        answers = pool.submit(decide_all).result()
        swept.result()

    for request_id in ids:
        request = ApprovalRequest.objects.get(pk=request_id)
        history = kinds(request_id)
        if answers[request_id] == 200:  # the decision won: no escalation
            assert (request.status, history) == ("approved", ["created", "approved"])
        else:  # the escalation won: maria's role no longer owns it
            assert answers[request_id] == 403
            assert (request.status, request.level) == ("pending", 2)
            assert history == ["created", "escalated"]


def test_decisions_catching_up_never_deadlock_with_a_sweep(bot, maria):
    """A decision on an overdue request first times it out in a transaction of
    its own, while a sweep times out many in one: both count the outcome in
    the same rollup row. Neither may hold that row while waiting for a request
    the other holds (PostgreSQL would fail one of them: a 500)."""
    ids = make_due(60, bot)
    cfo = Role.objects.get(name="cfo")
    ApprovalRequest.objects.filter(pk__in=ids).update(level=2, owner_role=cfo)
    start = threading.Barrier(2)

    def sweep():
        start.wait()
        try:
            return escalation.sweep(chunk=60)
        finally:
            connection.close()

    def decide_all():
        start.wait()
        try:  # from the other end, so that the two meet in the middle
            return [decide(maria, r, "approve").status_code for r in reversed(ids)]
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        swept = pool.submit(sweep)
        answers = pool.submit(decide_all).result()
        swept.result()

    assert set(answers) == {409}  # too late, each one, and never a 500
    assert ApprovalRequest.objects.filter(pk__in=ids, status="expired").count() == 60
    assert sum(DecisionStat.objects.values_list("count", flat=True)) == 60
