"""Webhook verification (the Standard Webhooks test vector), and acting once on
real callbacks from the live server through the Flask, Starlette and Django handlers."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import pytest
from countersign_sdk import Countersign, Webhook, WebhookVerificationError
from countersign_sdk.webhooks import django_view, flask_view, sign, starlette_endpoint

from approvals.agents import create_agent
from tests.helpers import INVOICE
from tests.processes import wait_for

# The test vector of the Standard Webhooks specification's reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
VECTOR_BODY = '{"test": 2432232314}'


def test_the_standard_webhooks_test_vector_verifies():
    webhook = Webhook(VECTOR_SECRET)
    assert webhook.verify_raw(VECTOR_BODY, VECTOR, now=1614265330) == {"test": 2432232314}
    assert (
        sign(VECTOR_SECRET, VECTOR["webhook-id"], 1614265330, VECTOR_BODY)
        == (VECTOR["webhook-signature"])
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"body": '{"test": 2432232315}'}, "no valid signature"),
        ({"webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZSBieSBzb21lb25lIGVsc2U="}, "signature"),
        ({"webhook-id": "msg_other"}, "no valid signature"),
        ({"now": 1614265330 + 301}, "too old"),
        ({"now": 1614265330 - 301}, "future"),
        ({"webhook-timestamp": "soon"}, "not a number"),
        ({"webhook-signature": ""}, "missing"),
    ],
)
def test_a_forged_tampered_or_stale_callback_is_refused(change, message):
    headers = {**VECTOR, **{k: v for k, v in change.items() if k.startswith("webhook")}}
    body = change.get("body", VECTOR_BODY)
    with pytest.raises(WebhookVerificationError, match=message):
        Webhook(VECTOR_SECRET).verify_raw(body, headers, now=change.get("now", 1614265330))


def test_any_of_several_signatures_and_secrets_verifies():
    other = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    headers = {**VECTOR, "webhook-signature": "v2,xyz v1,bm9wZQ== " + VECTOR["webhook-signature"]}
    assert Webhook([other, VECTOR_SECRET]).verify_raw(VECTOR_BODY, headers, now=1614265330)


def signed(secret: str, event: dict, webhook_id: str = "msg_1") -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    now = int(time.time())
    return body, {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, webhook_id, now, body),
    }


EVENT = {
    "type": "approval.approved",
    "timestamp": "2026-11-26T10:12:03Z",
    "data": {"id": "0b7a", "action": "invoice.discrepancy", "status": "approved"},
}


def test_the_starlette_endpoint_acts_once_and_refuses_forgeries():
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    acted = []

    async def resume(event) -> None:
        acted.append(event.request.id)

    app = Starlette()
    app.add_route("/cb", starlette_endpoint(Webhook(secret), resume), methods=["POST"])
    body, headers = signed(secret, EVENT)
    with TestClient(app) as client:
        assert client.post("/cb", content=body, headers=headers).status_code == 204
        assert client.post("/cb", content=body, headers=headers).status_code == 204
        forged = {**headers, "webhook-signature": "v1,bm9wZQ=="}
        assert client.post("/cb", content=body, headers=forged).status_code == 400
    assert acted == ["0b7a"]


def test_the_django_view_acts_once_and_refuses_forgeries():
    from django.test import RequestFactory

    secret = "whsec_" + base64.b64encode(b"d" * 32).decode()
    acted = []
    view = django_view(Webhook(secret), lambda event: acted.append(event.type))
    body, headers = signed(secret, EVENT)
    factory = RequestFactory()

    def post(extra: dict[str, str]):
        meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in extra.items()}
        return view(factory.post("/cb", body, content_type="application/json", **meta))

    assert post(headers).status_code == 204
    assert post(headers).status_code == 204
    assert post({**headers, "webhook-timestamp": str(int(time.time()) - 3600)}).status_code == 400
    assert view(factory.get("/cb")).status_code == 405
    assert acted == ["approval.approved"]


@pytest.mark.slow
def test_a_real_callback_reaches_a_flask_agent_once(world):
    """The live worker signs and delivers; the Flask handler verifies and acts once,
    and a replay of the same delivery does nothing."""
    from flask import Flask
    from werkzeug.serving import make_server

    acted, received = [], []
    app = Flask("agent")

    @app.before_request
    def keep():
        from flask import request

        received.append((request.get_data(), dict(request.headers)))

    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}/approvals/callback"
    hooked = create_agent("hooked", callback_url=url)
    webhook = Webhook(hooked.signing_secret)
    app.add_url_rule(
        "/approvals/callback",
        view_func=flask_view(webhook, lambda event: acted.append(event)),
        methods=["POST"],
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Countersign(hooked.api_key, world.url) as cs:
            req = cs.requests.create(**INVOICE)
        world.decide("maria", req.id, "approve")
        wait_for(lambda: acted, timeout=30, what="the callback")

        body, sent = received[0]
        headers = {k: v for k, v in sent.items() if k.lower().startswith("webhook-")}
        replay = httpx.post(url, content=body, headers=headers, timeout=10)
        tampered = httpx.post(url, content=body.replace(b"approved", b"denied"), headers=headers)
    finally:
        server.shutdown()

    assert replay.status_code == 204
    assert tampered.status_code == 400
    [event] = acted
    assert event.type == "approval.approved"
    assert event.request.id == req.id
    assert event.request.decision.verify()
