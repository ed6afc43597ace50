"""Signed callbacks resume agents: signing, retries, the delivery log, SSRF.

The receiver is a real local HTTP server; deliveries are driven in-process
here (tests/test_callback_processes.py runs them through a real worker).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from approvals import callbacks
from approvals.agents import create_agent, rotate_signing_secret
from approvals.kit.receiver import InvalidCallback, MemoryStore, Receiver, verify
from approvals.models import Delivery
from tests.helpers import INVOICE, agent_client, decide
from tests.receiver import Receiver as LocalReceiver


@pytest.fixture
def receiver():
    with LocalReceiver() as server:
        yield server


@pytest.fixture
def hooked(config, receiver):
    """An agent whose callbacks go to the local receiver."""
    return create_agent("hooked", callback_url=receiver.url)


def attempt(delivery: Delivery) -> str:
    """One delivery attempt, as the task would make it (with the lease it is handed)."""
    lease = Delivery.objects.get(pk=delivery.pk).locked_until
    return callbacks.deliver(delivery.pk, lease=lease)


def approved_delivery(hooked, maria) -> Delivery:
    bot = agent_client(hooked)
    created = bot.post("/api/v1/requests", INVOICE, format="json").json()
    decide(maria, created["id"], "approve")
    return Delivery.objects.get(request_id=created["id"])


def test_the_decision_is_queued_as_one_signed_event(hooked, maria, receiver):
    delivery = approved_delivery(hooked, maria)

    assert attempt(delivery) == "delivered"

    [sent] = receiver.received
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["webhook-id"] == delivery.webhook_id
    event = Webhook(hooked.signing_secret).verify(sent.body, sent.headers)  # the official library
    assert event["type"] == "approval.approved"
    assert event["data"]["status"] == "approved"
    assert event["data"]["decision"]["by"] == {"user": "maria", "role": "finance-manager"}
    assert sent.body == delivery.body.encode()  # the bytes serialized once are the bytes sent


def test_our_signer_matches_the_published_test_vector():
    from datetime import UTC, datetime

    from approvals.signing import sign

    assert (
        sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            int(datetime(2021, 2, 25, 15, 2, 10, tzinfo=UTC).timestamp()),
            '{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_every_attempt_is_logged(hooked, maria, receiver, settings):
    receiver.script.statuses = [500, 200]
    settings.APPROVALS_CALLBACK_SCHEDULE = [0, 0]
    delivery = approved_delivery(hooked, maria)

    assert attempt(delivery) == "retry"
    assert attempt(delivery) == "delivered"

    first, second = delivery.attempt_log.order_by("number")
    assert (first.status_code, first.error, second.status_code) == (500, "", 200)
    assert first.response_excerpt == "answer 1: 500"
    assert first.latency_ms >= 0
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_the_retry_follows_the_schedule_with_jitter(hooked, maria, receiver):
    receiver.script.statuses = [500, 200]
    delivery = approved_delivery(hooked, maria)

    attempt(delivery)

    delivery.refresh_from_db()
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 4.4 <= wait <= 5.6  # 5 s, give or take 10 %
    assert attempt(delivery) == "skipped"  # not yet due


def test_410_gone_stops_at_once(hooked, maria, receiver):
    receiver.script.statuses = [410]
    delivery = approved_delivery(hooked, maria)
    assert attempt(delivery) == "dead"
    assert attempt(delivery) == "skipped"
    assert len(receiver.received) == 1


def test_redirects_are_not_followed(hooked, maria, receiver):
    receiver.script.statuses = [302]
    receiver.script.location = "http://169.254.169.254/latest/meta-data/"
    delivery = approved_delivery(hooked, maria)
    assert attempt(delivery) == "retry"
    assert delivery.attempt_log.get().status_code == 302


def test_after_the_last_attempt_the_delivery_is_dead_and_can_be_redelivered(
    hooked, maria, receiver, settings
):
    receiver.script.statuses = [503, 503, 200]
    settings.APPROVALS_CALLBACK_SCHEDULE = [0, 0]
    delivery = approved_delivery(hooked, maria)
    attempt(delivery)
    assert attempt(delivery) == "dead"

    callbacks.redeliver(Delivery.objects.filter(pk=delivery.pk))

    assert attempt(delivery) == "delivered"
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {delivery.webhook_id}
    assert len(receiver.received) == 3


def test_a_refused_connection_is_retried(hooked, maria, settings):
    delivery = approved_delivery(hooked, maria)
    Delivery.objects.filter(pk=delivery.pk).update(url="http://127.0.0.1:9/nothing-listens")
    assert attempt(delivery) == "retry"
    assert "Connection refused" in delivery.attempt_log.get().error


def test_a_slow_receiver_times_out(hooked, maria, receiver, settings):
    import threading

    receiver.script.hold = threading.Event()
    settings.APPROVALS_CALLBACK_TIMEOUT = 0.5
    delivery = approved_delivery(hooked, maria)
    assert attempt(delivery) == "retry"
    assert "Timeout" in delivery.attempt_log.get().error


class TestRotation:
    def test_both_signatures_are_sent_during_the_grace_period(self, hooked, maria, receiver):
        old = hooked.signing_secret
        new, _ = rotate_signing_secret(hooked.agent)
        delivery = approved_delivery(hooked, maria)

        attempt(delivery)

        [sent] = receiver.received
        assert len(sent.headers["webhook-signature"].split(" ")) == 2
        assert Webhook(old).verify(sent.body, sent.headers)
        assert Webhook(new).verify(sent.body, sent.headers)

    def test_after_the_grace_period_only_the_new_secret_signs(self, hooked, maria, receiver):
        new, until = rotate_signing_secret(hooked.agent, grace_hours=1)
        delivery = approved_delivery(hooked, maria)
        with time_machine.travel(until + timedelta(seconds=1)):
            Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
            attempt(delivery)
        [sent] = receiver.received
        assert len(sent.headers["webhook-signature"].split(" ")) == 1
        assert verify(sent.headers, sent.body, new, now=(until + timedelta(seconds=1)).timestamp())

    def test_the_command_rotates(self, hooked):
        from io import StringIO

        from django.core.management import call_command

        out = StringIO()
        call_command("rotate_agent_secret", "hooked", "--json", stdout=out)
        printed = json.loads(out.getvalue())
        assert printed["signing_secret"].startswith("whsec_")
        assert printed["signing_secret"] != hooked.signing_secret


class TestSSRF:
    @pytest.fixture(autouse=True)
    def strict(self, settings):
        settings.APPROVALS_ALLOW_PRIVATE_CALLBACKS = False

    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/hook",
            "https://localhost/hook",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.7/hook",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
        ],
    )
    def test_private_addresses_are_refused_when_given(self, bot, url):
        response = bot.post("/api/v1/requests", {**INVOICE, "callback_url": url}, format="json")
        assert response.status_code == 400
        assert "callback_url" in response.json()["errors"]

    def test_http_is_refused_without_the_flag(self, bot):
        body = {**INVOICE, "callback_url": "http://example.com/hook"}
        response = bot.post("/api/v1/requests", body, format="json")
        assert response.status_code == 400
        assert "https" in response.json()["errors"]["callback_url"][0]

    def test_the_address_is_checked_again_at_connection_time(self, hooked, maria, receiver):
        # The URL was accepted while private callbacks were allowed (or DNS said
        # otherwise); at send time the loopback address is refused.
        delivery = approved_delivery(hooked, maria)
        assert attempt(delivery) == "retry"
        assert "127.0.0.1" in delivery.attempt_log.get().error
        assert receiver.received == []

    def test_create_agent_refuses_a_private_callback(self, db):
        from django.core.management import CommandError, call_command

        with pytest.raises(CommandError, match="private"):
            call_command("create_agent", "x", "--callback-url", "https://127.0.0.1/x")


class TestReceiverKit:
    SECRET = "whsec_" + "A" * 43 + "="

    def signed(self, body: str, *, at: int | None = None, msg="msg_1") -> dict[str, str]:
        from approvals.signing import headers

        return headers([self.SECRET], msg, at or int(time.time()), body)

    def test_a_genuine_callback_verifies(self):
        body = '{"type": "approval.approved", "data": {}}'
        assert verify(self.signed(body), body, self.SECRET)["type"] == "approval.approved"

    def test_a_replay_with_an_old_timestamp_is_rejected(self):
        body = '{"type": "approval.approved"}'
        with pytest.raises(InvalidCallback, match="too old"):
            verify(self.signed(body, at=int(time.time()) - 600), body, self.SECRET)

    def test_a_future_timestamp_is_rejected(self):
        body = '{"type": "approval.approved"}'
        with pytest.raises(InvalidCallback, match="future"):
            verify(self.signed(body, at=int(time.time()) + 600), body, self.SECRET)

    def test_a_tampered_body_is_rejected(self):
        headers = self.signed('{"type": "approval.denied"}')
        with pytest.raises(InvalidCallback, match="no valid signature"):
            verify(headers, '{"type": "approval.approved"}', self.SECRET)

    @pytest.mark.parametrize("garbage", ["v1", "v1,", "v1,%%%", "nonsense", ",,,", "v2,abc"])
    def test_a_garbled_signature_header_is_a_clean_rejection(self, garbage):
        body = "{}"
        headers = {**self.signed(body), "webhook-signature": garbage}
        with pytest.raises(InvalidCallback):
            verify(headers, body, self.SECRET)

    def test_missing_headers_are_rejected(self):
        with pytest.raises(InvalidCallback, match="missing"):
            verify({}, "{}", self.SECRET)

    def test_the_same_event_twice_is_acted_on_once(self):
        body = '{"type": "approval.approved"}'
        headers = self.signed(body)
        acted = []
        receiver = Receiver(self.SECRET, MemoryStore())

        assert receiver.process(headers, body, acted.append) == "handled"
        assert receiver.process(self.signed(body), body, acted.append) == "duplicate"
        assert len(acted) == 1

    def test_a_failed_handler_lets_the_retry_act(self):
        body = '{"type": "approval.approved"}'
        receiver = Receiver(self.SECRET, MemoryStore())

        def boom(event):
            raise RuntimeError("database down")

        with pytest.raises(RuntimeError):
            receiver.process(self.signed(body), body, boom)
        acted = []
        assert receiver.process(self.signed(body), body, acted.append) == "handled"

    def test_the_redis_store_dedupes_across_processes(self):
        import redis

        from approvals.kit.receiver import RedisStore

        client = redis.Redis.from_url("redis://127.0.0.1:6379/14")
        client.flushdb()
        first, second = (
            RedisStore(client),
            RedisStore(redis.Redis.from_url("redis://127.0.0.1:6379/14")),
        )
        assert first.add("msg_x", 60) is True
        assert second.add("msg_x", 60) is False

    def test_our_callbacks_verify_with_the_kit(self, hooked, maria, receiver):
        delivery = approved_delivery(hooked, maria)
        attempt(delivery)
        [sent] = receiver.received
        event = verify(sent.headers, sent.body, hooked.signing_secret)
        assert event["data"]["id"] == str(delivery.request_id)
