"""One sender sends many deliveries at once, with every guarantee of one:
signed once per attempt, the same webhook-id on retries, one log row per
attempt, the wall-clock bound per attempt (a slow receiver in the batch holds
up nobody else), leases (two senders never send the same delivery), and the
agent's share of attempts in flight.

Real local receivers and PostgreSQL; the senders run in this process."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from standardwebhooks.webhooks import Webhook

from approvals import callbacks
from approvals.agents import create_agent
from approvals.models import Delivery, DeliveryAttempt
from tests.helpers import INVOICE, agent_client, decide
from tests.hostile import HostileReceiver
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)  # senders in threads use their own sessions

TIMEOUT = 1.5
MARGIN = 0.75  # scheduling noise on a busy 2-core machine


def decided(credentials, maria, count: int = 1) -> list[Delivery]:
    """Approve ``count`` of the agent's requests: their callbacks are queued."""
    client = agent_client(credentials)
    ids = []
    for _ in range(count):
        created = client.post("/api/v1/requests", INVOICE, format="json").json()
        decide(maria, created["id"], "approve")
        ids.append(created["id"])
    return list(Delivery.objects.filter(request_id__in=ids).order_by("pk"))


def send(delivery: Delivery) -> str:
    """What the delivery task does with the delivery it was handed."""
    return callbacks.deliver(delivery.pk, lease=delivery.locked_until)


def test_one_task_sends_the_other_queued_first_attempts_too_each_signed_and_logged_once(
    config, maria
):
    with Receiver() as receiver:
        agents = [create_agent(f"agent-{n}", callback_url=receiver.url) for n in range(3)]
        queued = [d for credentials in agents for d in decided(credentials, maria, 2)]

        assert send(queued[0]) == "delivered"
        # The others' own tasks come later and find nothing left to do.
        assert [send(d) for d in queued[1:]] == ["skipped"] * 5

    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted(
        d.webhook_id for d in queued
    )
    secrets = {c.agent.pk: c.signing_secret for c in agents}
    for sent in receiver.received:
        delivery = next(d for d in queued if d.webhook_id == sent.headers["webhook-id"])
        Webhook(secrets[delivery.agent_id]).verify(sent.body, sent.headers)
        assert sent.body == delivery.body.encode()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert DeliveryAttempt.objects.count() == 6
    assert set(DeliveryAttempt.objects.values_list("number", flat=True)) == {1}


def test_a_retry_goes_out_under_the_same_webhook_id_with_a_fresh_signature(config, maria, settings):
    settings.APPROVALS_CALLBACK_SCHEDULE = [0, 0, 0]
    with Receiver() as receiver:
        receiver.script.statuses = [500, 503, 200]
        hooked = create_agent("hooked", callback_url=receiver.url)
        [delivery] = decided(hooked, maria)

        assert send(delivery) == "retry"  # a sender attempts a delivery once
        assert callbacks.deliver(delivery.pk) == "retry"
        assert callbacks.deliver(delivery.pk) == "delivered"

    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery.webhook_id}
    for sent in receiver.received:
        Webhook(hooked.signing_secret).verify(sent.body, sent.headers)
    log = delivery.attempt_log.order_by("number")
    assert [(a.number, a.status_code) for a in log] == [(1, 500), (2, 503), (3, 200)]
    assert [a.webhook_timestamp for a in log] == [
        int(r.headers["webhook-timestamp"]) for r in receiver.received
    ]


@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_a_slow_receiver_in_the_batch_is_cut_off_and_holds_up_nobody_else(
    config, maria, settings, mode
):
    settings.APPROVALS_CALLBACK_TIMEOUT = TIMEOUT
    with HostileReceiver(mode) as hostile_receiver, Receiver() as good_receiver:
        hostile = create_agent("hostile", callback_url=hostile_receiver.url)
        good = create_agent("good", callback_url=good_receiver.url)
        [stuck] = decided(hostile, maria)
        others = decided(good, maria, 2)

        started = time.monotonic()
        assert send(stuck) == "retry"
        elapsed = time.monotonic() - started

    assert TIMEOUT <= elapsed < TIMEOUT + MARGIN
    # The good agent's callbacks went out at once, not after the hostile one's timeout.
    assert len(good_receiver.received) == 2
    assert all(r.at - started < 0.5 for r in good_receiver.received)
    assert {d.status for d in Delivery.objects.filter(pk__in=[o.pk for o in others])} == {
        "delivered"
    }
    [logged] = stuck.attempt_log.all()
    assert logged.error == f"Timeout: no complete answer within {TIMEOUT:g} s"
    assert TIMEOUT * 1000 <= logged.latency_ms < (TIMEOUT + MARGIN) * 1000
    assert Delivery.objects.get(pk=stuck.pk).locked_until is None  # free for the retry


def test_two_senders_at_once_never_send_the_same_delivery(config, maria, settings):
    settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT = 4
    with Receiver() as receiver:
        agents = [create_agent(f"agent-{n}", callback_url=receiver.url) for n in range(4)]
        queued = [d for credentials in agents for d in decided(credentials, maria, 5)]
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def sender(delivery: Delivery) -> None:
            try:
                barrier.wait(timeout=10)
                outcomes.append(send(delivery))
            finally:
                connection.close()

        threads = [threading.Thread(target=sender, args=(d,)) for d in (queued[0], queued[-1])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(ids) == sorted(d.webhook_id for d in queued)  # each exactly once
    assert DeliveryAttempt.objects.count() == len(queued)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_sender_keeps_to_the_agent_s_share_of_attempts_in_flight(config, maria, settings):
    settings.APPROVALS_CALLBACK_MAX_IN_FLIGHT_PER_AGENT = 2
    in_flight, most = [0], [0]
    lock = threading.Lock()
    with Receiver() as receiver:

        def answer_slowly(received) -> None:  # overlapping attempts would show here
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            time.sleep(0.05)
            with lock:
                in_flight[0] -= 1

        receiver.on_request = answer_slowly
        busy = create_agent("busy", callback_url=receiver.url)
        queued = decided(busy, maria, 6)

        assert send(queued[0]) == "delivered"

    assert most[0] == 2
    assert len(receiver.received) == 6
    assert callbacks.busy_slots() == {}  # every slot given back
