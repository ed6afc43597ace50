"""Nobody stalls anyone else, with real processes: while one agent's receiver
holds every connection open without answering, deadlines still escalate and
expire on time and another agent's callback still leaves within a second.

Worker(s) and beat on a Redis of the test's own, PostgreSQL, real local
receivers (one of them hostile)."""

from __future__ import annotations

import time

import pytest

from approvals.agents import create_agent
from approvals.models import ApprovalRequest, AuditEvent, Delivery, DeliveryAttempt
from policies.config import apply_documents, load_yaml
from tests.helpers import FAST_CHAIN, INVOICE, agent_client, decide
from tests.hostile import HostileReceiver
from tests.processes import wait_for
from tests.receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HOSTILE_DELIVERIES = 6


def hostile_backlog(hostile, maria) -> None:
    """The hostile agent's requests are decided: its callbacks all go out at once."""
    client = agent_client(hostile)
    for _ in range(HOSTILE_DELIVERIES):
        created = client.post("/api/v1/requests", INVOICE, format="json").json()
        decide(maria, created["id"], "approve")


def check_isolation(processes, bot, maria, config) -> None:
    apply_documents(load_yaml(FAST_CHAIN), author="tests")
    with HostileReceiver("silent") as hostile_receiver, Receiver() as good_receiver:
        hostile = create_agent("hostile", callback_url=hostile_receiver.url)
        good = create_agent("good", callback_url=good_receiver.url)
        processes.beat()
        for name in list(processes.running):
            if name != "beat":
                wait_for(lambda n=name: "ready" in processes.log(n), timeout=60, what=name)

        hostile_backlog(hostile, maria)
        wait_for(lambda: len(hostile_receiver.requests) >= 2, timeout=10, what="hostile attempts")
        hostile_started = time.monotonic()

        # (a) The engine: a 2 s + 2 s chain escalates and expires on time.
        body = {"action": "fast.pay", "summary": "fast one", "context": {"amount": 5}}
        chain = bot.post("/api/v1/requests", body, format="json").json()

        # (b) Another agent's callback leaves within about a second of the decision.
        created = agent_client(good).post("/api/v1/requests", INVOICE, format="json").json()
        decided = time.monotonic()
        assert decide(maria, created["id"], "approve").status_code == 200
        wait_for(lambda: good_receiver.received, timeout=10, what="the good agent's callback")
        assert good_receiver.received[0].at - decided < 1.0

        wait_for(
            lambda: ApprovalRequest.objects.get(pk=chain["id"]).status == "expired",
            timeout=15, what="the expiry",
        )  # fmt: skip
        escalated = AuditEvent.objects.get(request_id=chain["id"], kind="escalated")
        expired = AuditEvent.objects.get(request_id=chain["id"], kind="expired")
        assert escalated.data["late_seconds"] < 1.0, escalated.data
        assert expired.data["late_seconds"] < 1.0, expired.data

        # All of it while the hostile receiver held its two connections, and no more.
        assert time.monotonic() - hostile_started < 10  # its attempts were not yet cut off
        assert len(hostile_receiver.requests) == 2

        # Then the worker cuts those two attempts off at the 10 s timeout, and logs them.
        cut = DeliveryAttempt.objects.filter(delivery__agent=hostile.agent)
        wait_for(lambda: cut.count() == 2, timeout=15, what="the hostile attempts to be cut off")
        for attempt in cut:
            assert attempt.error == "Timeout: no complete answer within 10 s"
            assert 10_000 <= attempt.latency_ms < 11_000
    hostile_deliveries = Delivery.objects.filter(agent=hostile.agent)
    assert hostile_deliveries.count() == HOSTILE_DELIVERIES  # deferred, none dropped
    assert set(hostile_deliveries.values_list("status", flat=True)) == {"pending"}


def test_dedicated_lanes_keep_the_engine_and_other_agents_moving(config, bot, maria, processes):
    processes.env.update(APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT="2")
    processes.worker("engine", "-Q", "engine", "--pool=solo")
    processes.worker("notifications", "-Q", "notifications", "--pool=solo")
    processes.worker("callbacks", "-Q", "callbacks", "--pool=threads", "--concurrency=4")
    check_isolation(processes, bot, maria, config)


def test_one_plain_worker_serves_every_lane_and_the_hostile_agent_gets_its_share_only(
    config, bot, maria, processes
):
    processes.env.update(APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT="2")
    processes.worker("plain", "--concurrency=4")  # prefork, all three lanes
    check_isolation(processes, bot, maria, config)
