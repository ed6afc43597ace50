"""Callbacks through a real Celery worker and beat, to a real local receiver."""

from __future__ import annotations

import threading

import pytest

from approvals.agents import create_agent
from approvals.kit.receiver import MemoryStore
from approvals.kit.receiver import Receiver as Kit
from approvals.models import Delivery
from tests.helpers import INVOICE, agent_client, decide
from tests.processes import free_port, wait_for
from tests.receiver import Receiver, Script

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_engine(processes, **settings) -> None:
    processes.env.update({key: str(value) for key, value in settings.items()})
    processes.worker()
    processes.beat()
    wait_for(lambda: "ready" in processes.log("worker"), timeout=60, what="worker ready")


def approve_one(credentials, maria) -> Delivery:
    created = agent_client(credentials).post("/api/v1/requests", INVOICE, format="json").json()
    decide(maria, created["id"], "approve")
    return Delivery.objects.get(request_id=created["id"])


def test_500_twice_then_200_is_delivered_on_the_third_attempt(config, maria, processes):
    with Receiver(Script(statuses=[500, 500, 200])) as receiver:
        hooked = create_agent("hooked", callback_url=receiver.url)
        start_engine(processes, APPROVALS_CALLBACK_SCHEDULE="0,1,1")
        delivery = approve_one(hooked, maria)

        wait_for(
            lambda: Delivery.objects.get(pk=delivery.pk).status == "delivered",
            timeout=30, what="delivery",
        )  # fmt: skip

    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery.webhook_id}
    log = list(delivery.attempt_log.order_by("number").values_list("status_code", flat=True))
    assert log == [500, 500, 200]


def test_with_the_default_schedule_one_failure_is_retried_about_5_s_later(config, maria, processes):
    with Receiver(Script(statuses=[503, 200])) as receiver:
        hooked = create_agent("hooked", callback_url=receiver.url)
        start_engine(processes)
        delivery = approve_one(hooked, maria)
        wait_for(
            lambda: Delivery.objects.get(pk=delivery.pk).status == "delivered",
            timeout=30, what="delivery",
        )  # fmt: skip

    first, second = receiver.received
    assert 4.0 <= second.at - first.at <= 7.0  # 5 s ± 10 % jitter, plus the 1 s sweep


def test_a_receiver_down_past_the_schedule_leaves_a_dead_delivery_to_redeliver(
    config, maria, processes, root
):
    port = free_port()
    url = f"http://127.0.0.1:{port}/approvals/callback"
    hooked = create_agent("hooked", callback_url=url)
    start_engine(processes, APPROVALS_CALLBACK_SCHEDULE="0,0.5,0.5")
    delivery = approve_one(hooked, maria)  # nothing listens on the port
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).status == "dead", timeout=30, what="dead")
    assert delivery.attempt_log.count() == 3

    dead = root.get("/admin/approvals/delivery/?status=dead").content.decode()
    assert delivery.webhook_id in dead
    with Receiver(port=port) as receiver:
        root.post(
            "/admin/approvals/delivery/",
            {"action": "redeliver", "_selected_action": [delivery.pk]},
        )
        wait_for(
            lambda: Delivery.objects.get(pk=delivery.pk).status == "delivered",
            timeout=30, what="the redelivery",
        )  # fmt: skip

    [sent] = receiver.received
    assert sent.headers["webhook-id"] == delivery.webhook_id


def test_a_worker_killed_after_sending_delivers_again_and_the_kit_acts_once(
    config, maria, processes
):
    hold = threading.Event()
    acted = []
    with Receiver(Script(hold=hold)) as receiver:
        hooked = create_agent("hooked", callback_url=receiver.url)
        kit = Kit(hooked.signing_secret, MemoryStore())
        receiver.on_request = lambda received: kit.process(
            received.headers, received.body, acted.append
        )
        start_engine(processes, APPROVALS_CALLBACK_LEASE_SECONDS=2)
        delivery = approve_one(hooked, maria)
        wait_for(receiver.script.arrived.is_set, timeout=30, what="the first attempt")

        processes.kill("worker")  # it sent, and now dies before writing anything back
        hold.set()
        processes.worker("second-worker")
        wait_for(
            lambda: Delivery.objects.get(pk=delivery.pk).status == "delivered",
            timeout=60, what="the second delivery",
        )  # fmt: skip

    assert len(receiver.received) == 2
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery.webhook_id}
    assert len(acted) == 1
    assert acted[0]["type"] == "approval.approved"
