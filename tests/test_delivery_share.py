"""One agent holds at most APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT sending
slots over all workers; its other deliveries wait a little, others' go on."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from approvals import callbacks
from approvals.agents import create_agent
from approvals.models import Delivery
from tests.helpers import INVOICE, agent_client, another_session, decide
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)  # another session holds the slots


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def delivery_for(credentials, maria) -> Delivery:
    created = agent_client(credentials).post("/api/v1/requests", INVOICE, format="json").json()
    decide(maria, created["id"], "approve")
    return Delivery.objects.get(request_id=created["id"])


def hold_slots(agent_id: int, count: int) -> psycopg.Connection:
    """Another worker's session, busy sending ``count`` of the agent's attempts."""
    other = another_session()
    for slot in range(count):
        other.execute(
            "SELECT pg_advisory_lock(%s::int, %s::int)", [callbacks.SLOT_NAMESPACE + slot, agent_id]
        )
    return other


def test_an_agent_at_its_limit_waits_a_second_and_others_are_sent(
    config, maria, receiver, settings
):
    settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT = 2
    busy = create_agent("busy", callback_url=receiver.url)
    calm = create_agent("calm", callback_url=receiver.url)
    held = delivery_for(busy, maria)
    other = delivery_for(calm, maria)
    session = hold_slots(busy.agent.pk, 2)
    try:
        assert callbacks.busy_slots() == {busy.agent.pk: 2}
        before = timezone.now()
        assert callbacks.deliver(held.pk, lease=held.locked_until) == "deferred"
        assert callbacks.deliver(other.pk, lease=other.locked_until) == "delivered"

        deferred = Delivery.objects.get(pk=held.pk)
        assert deferred.status == "pending" and deferred.attempts == 0  # not an attempt
        assert deferred.locked_until is None
        assert before + timedelta(seconds=0.9) <= deferred.next_attempt_at
        assert deferred.next_attempt_at <= timezone.now() + timedelta(seconds=1)
        assert held.attempt_log.count() == 0
        Delivery.objects.filter(pk=held.pk).update(next_attempt_at=timezone.now())
        assert callbacks.dispatch_due() == []  # the sweep does not hand it out either
    finally:
        session.close()  # that worker is done (or died): its slots are free again

    [(pk, lease)] = callbacks.dispatch_due()
    assert pk == held.pk
    assert callbacks.deliver(pk, lease=lease) == "delivered"
    assert [r.headers["webhook-id"] for r in receiver.received] == [
        other.webhook_id,
        held.webhook_id,
    ]


def test_one_free_slot_lets_one_more_attempt_through(config, maria, receiver, settings):
    settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT = 2
    busy = create_agent("busy", callback_url=receiver.url)
    first, second = delivery_for(busy, maria), delivery_for(busy, maria)
    Delivery.objects.filter(pk__in=[first.pk, second.pk]).update(locked_until=None)
    session = hold_slots(busy.agent.pk, 1)
    try:
        assert len(callbacks.dispatch_due()) == 1  # one slot free: one handed out
    finally:
        session.close()


def test_the_sweep_hands_out_a_backlog_a_few_per_agent(config, maria, receiver, settings):
    settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT = 2
    busy = create_agent("busy", callback_url=receiver.url)
    calm = create_agent("calm", callback_url=receiver.url)
    for _ in range(5):
        delivery_for(busy, maria)
    calm_one = delivery_for(calm, maria)
    Delivery.objects.update(locked_until=None)

    taken = dict(callbacks.dispatch_due())

    by_agent = Delivery.objects.filter(pk__in=taken).values_list("agent__name", flat=True)
    assert sorted(by_agent) == ["busy", "busy", "calm"]
    assert calm_one.pk in taken
