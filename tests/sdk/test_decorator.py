"""@requires_approval through approve, a reviewer's edit, deny and expiry, on a live server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from countersign_sdk import (
    ApprovalDenied,
    ApprovalExpired,
    AsyncCountersign,
    Countersign,
    requires_approval,
)

from tests.processes import wait_for

pytestmark = [pytest.mark.slow]


def decide_when_pending(world, reviewer: str, outcome: str, **body) -> threading.Thread:
    """A reviewer who decides the agent's next pending request once it appears."""

    def pending():
        with Countersign(world.api_key, world.url) as cs:
            return cs.requests.list(status="pending").results

    def run():
        [request] = wait_for(pending, timeout=30, what="the pending request")
        world.decide(reviewer, request.id, outcome, **body)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_it_runs_once_approved_with_the_payload_it_asked_for(world):
    runs = []
    with world.client() as cs:

        @requires_approval(
            action="refund.issue",
            summary="Refund {order} for {amount}",
            context=lambda order, amount: {"amount": amount, "order": order},
            client=cs,
            timeout=60,
        )
        def refund(order: str, amount: float) -> str:
            runs.append((order, amount))
            return f"refunded {order}"

        reviewer = decide_when_pending(world, "sam", "approve")
        assert refund("A-1", 30.0) == "refunded A-1"
        reviewer.join()
        # Called again with the same arguments (a restarted process): same request, no new ask.
        assert refund("A-1", 30.0) == "refunded A-1"
        requests = cs.requests.list().results

    assert runs == [("A-1", 30.0), ("A-1", 30.0)]
    assert len(requests) == 1
    assert requests[0].summary == "Refund A-1 for 30.0"
    assert requests[0].context == {"amount": 30.0, "order": "A-1"}


def test_a_reviewers_edit_is_what_runs(world):
    runs = []
    with world.client() as cs:

        @requires_approval(action="transfer.send", summary="Transfer", client=cs, timeout=60)
        def transfer(to: str, amount: float) -> None:
            runs.append((to, amount))

        edited = {"to": "acct-1", "amount": 50.0}
        reviewer = decide_when_pending(world, "maria", "approve", payload=edited)
        transfer("acct-1", 500.0)
        reviewer.join()
    assert runs == [("acct-1", 50.0)]


def test_a_deny_does_not_run_and_raises_with_the_reason(world):
    runs = []
    with world.client() as cs:

        @requires_approval(action="refund.issue", summary="Refund", client=cs, key="order-9")
        def refund(order: str) -> None:
            runs.append(order)

        reviewer = decide_when_pending(world, "sam", "deny", reason="Outside the refund window")
        with pytest.raises(ApprovalDenied) as denied:
            refund("A-9")
        reviewer.join()
        assert cs.requests.find("order-9") is not None  # the explicit key was used
    assert runs == []
    assert denied.value.reason == "Outside the refund window"


def test_expiry_does_not_run_and_carries_the_ticket(world):
    runs = []
    with world.client() as cs:

        @requires_approval(action="quick.ping", summary="Ping", client=cs, timeout=60)
        def ping(host: str) -> None:
            runs.append(host)

        with pytest.raises(ApprovalExpired) as expired:
            ping("db-1")
    assert runs == []
    assert expired.value.ticket is not None


def test_an_async_function_waits_without_blocking_the_loop(world):
    runs = []

    async def main() -> None:
        async with AsyncCountersign(world.api_key, world.url) as cs:

            @requires_approval(action="transfer.send", summary="Transfer", client=cs, timeout=60)
            async def transfer(to: str, amount: float) -> str:
                runs.append((to, amount))
                return "sent"

            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.05)

            beat = asyncio.create_task(ticker())
            reviewer = decide_when_pending(world, "maria", "approve")
            assert await transfer("acct-7", 12.5) == "sent"
            beat.cancel()
            await asyncio.to_thread(reviewer.join)
            # A blocked loop would let the ticker run once at most, after the wait.
            assert ticks > 1  # the loop kept running while the decorator waited

    asyncio.run(main())
    assert runs == [("acct-7", 12.5)]
