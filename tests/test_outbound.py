"""Every outbound attempt is bounded in wall-clock time, keeps at most 1 KiB of
the answer and never drains a connection; addresses that could reach a private
network are refused. Against real local socket servers that misbehave."""

from __future__ import annotations

import time

import pytest

from approvals import callbacks, outbound
from approvals.agents import create_agent
from approvals.models import Delivery
from tests.helpers import INVOICE, agent_client, decide
from tests.hostile import HostileReceiver
from tests.receiver import Receiver

TIMEOUT = 1.5
MARGIN = 0.75  # scheduling noise on a busy 2-core machine


def post(url: str, timeout: float = TIMEOUT) -> tuple[outbound.Result, float]:
    started = time.monotonic()
    result = outbound.post(url, b"{}", {"content-type": "application/json"},
                           allow_private=True, timeout=timeout)  # fmt: skip
    return result, time.monotonic() - started


@pytest.mark.parametrize("mode", ["drip", "silent"])
def test_a_receiver_that_drips_or_never_answers_is_cut_off_at_the_timeout(mode):
    with HostileReceiver(mode) as receiver:
        result, elapsed = post(receiver.url)

    assert TIMEOUT <= elapsed < TIMEOUT + MARGIN
    assert result.status is None
    assert result.error == f"Timeout: no complete answer within {TIMEOUT:g} s"
    assert not result.ok


def test_an_answer_whose_body_drips_keeps_its_status_and_what_came_in_time():
    with HostileReceiver("drip-body") as receiver:
        result, elapsed = post(receiver.url, timeout=2.5)

    assert 2.5 <= elapsed < 2.5 + MARGIN
    assert result.status == 200  # the receiver did say 2xx; the body is only an excerpt
    assert result.excerpt in ("x", "xx")  # one byte a second
    assert result.error.startswith("Timeout")


def test_an_endless_answer_is_read_to_1_kib_and_its_connection_closed_not_drained():
    with HostileReceiver("stream") as receiver:
        first, elapsed = post(receiver.url)
        second, _ = post(receiver.url)

    assert elapsed < 0.5  # it does not wait for the end that never comes
    assert first.status == 200
    assert first.excerpt == "y" * 1024
    assert second.excerpt == "y" * 1024
    assert receiver.connections == 2  # each cut-off connection was closed, not reused


def test_an_answer_read_to_its_end_leaves_the_connection_kept_alive():
    connections = []
    with Receiver() as receiver:
        serve = receiver.server.finish_request  # called once per accepted connection
        receiver.server.finish_request = lambda *args: (connections.append(1), serve(*args))
        first, _ = post(receiver.url)
        second, _ = post(receiver.url)

    assert (first.status, second.status) == (200, 200)
    assert (first.excerpt, second.excerpt) == ("answer 1: 200", "answer 2: 200")
    assert len(connections) == 1


def test_a_hostile_receiver_s_attempt_is_logged_with_its_timeout(config, maria, settings):
    settings.APPROVALS_CALLBACK_TIMEOUT = TIMEOUT
    with HostileReceiver("drip") as receiver:
        hooked = create_agent("hooked", callback_url=receiver.url)
        created = agent_client(hooked).post("/api/v1/requests", INVOICE, format="json").json()
        decide(maria, created["id"], "approve")
        delivery = Delivery.objects.get(request_id=created["id"])

        started = time.monotonic()
        outcome = callbacks.deliver(delivery.pk, lease=delivery.locked_until)
        elapsed = time.monotonic() - started

    assert outcome == "retry"
    assert elapsed < TIMEOUT + MARGIN
    [logged] = delivery.attempt_log.all()
    assert logged.status_code is None
    assert logged.error == f"Timeout: no complete answer within {TIMEOUT:g} s"
    assert TIMEOUT * 1000 <= logged.latency_ms < (TIMEOUT + MARGIN) * 1000
    assert Delivery.objects.get(pk=delivery.pk).locked_until is None  # free for the retry


def test_an_endless_answer_is_logged_with_a_1_kib_excerpt(config, maria):
    with HostileReceiver("stream") as receiver:
        hooked = create_agent("hooked", callback_url=receiver.url)
        created = agent_client(hooked).post("/api/v1/requests", INVOICE, format="json").json()
        decide(maria, created["id"], "approve")
        delivery = Delivery.objects.get(request_id=created["id"])
        assert callbacks.deliver(delivery.pk, lease=delivery.locked_until) == "delivered"

    [logged] = delivery.attempt_log.all()
    assert (logged.status_code, len(logged.response_excerpt)) == (200, 1024)


def test_the_lease_outlasts_the_longest_attempt(settings):
    settings.APPROVALS_CALLBACK_TIMEOUT = 10
    settings.APPROVALS_CALLBACK_LEASE_SECONDS = 2
    soft, hard = callbacks.task_time_limits()
    assert 10 < soft < hard < callbacks.lease_seconds()


class TestAddresses:
    @pytest.mark.parametrize(
        "address",
        [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",  # IPv4-mapped
            "::127.0.0.1",  # IPv4-compatible (deprecated)
            "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
            "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
            "64:ff9b::808:808",  # NAT64 even of a public address: the gateway decides
            "64:ff9b:1::a00:1",  # local-use NAT64
            "2002:7f00:1::1",  # 6to4 of 127.0.0.1
            "2002:808:808::1",  # 6to4 even of a public address
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        ],
    )
    def test_refused(self, address):
        with pytest.raises(outbound.UnsafeURL):
            outbound.check_address(address, allow_private=False)

    @pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
    def test_public_addresses_pass(self, address):
        outbound.check_address(address, allow_private=False)

    def test_the_operator_may_allow_private_addresses(self):
        outbound.check_address("64:ff9b::7f00:1", allow_private=True)
