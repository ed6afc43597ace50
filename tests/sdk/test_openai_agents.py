"""A real OpenAI Agents SDK Runner with a scripted model, its tool gated on Countersign."""

from __future__ import annotations

import asyncio
import threading

import pytest
from agents import Agent, Runner, RunState, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from countersign_sdk import AsyncCountersign, Countersign
from countersign_sdk.openai_agents import file_interruptions, gated_tool, resolve_interruptions

from tests.processes import wait_for

pytestmark = [pytest.mark.slow]

set_tracing_disabled(True)  # nothing leaves this machine


def make_agent(cs, executed: list, *, action: str, pause: bool, call_id: str) -> Agent:
    @function_tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund a customer's order."""
        executed.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    gated = gated_tool(
        issue_refund,
        action=action,
        summary="Refund {amount} on {order_id}",
        client=cs,
        timeout=30,
        pause=pause,
    )
    model = ScriptedModel(
        [
            [function_call("issue_refund", {"order_id": "A-1", "amount": 500.0}, call_id=call_id)],
            [assistant_message("Finished.")],
        ]
    )
    return Agent(name="support", instructions="Refund orders.", model=model, tools=[gated])


def reviewer(world, name: str, outcome: str, **body) -> threading.Thread:
    def pending():
        with Countersign(world.api_key, world.url) as cs:
            return cs.requests.list(status="pending").results

    def run():
        [request] = wait_for(pending, timeout=30, what="a pending request")
        world.decide(name, request.id, outcome, **body)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def tool_outputs(result) -> list[str]:
    return [str(item.output) for item in result.new_items if item.type == "tool_call_output_item"]


def test_a_gated_tool_waits_for_the_decision_and_runs_the_edited_arguments(world):
    executed: list = []

    async def run():
        async with AsyncCountersign(world.api_key, world.url) as cs:
            agent = make_agent(cs, executed, action="transfer.refund", pause=False, call_id="c1")
            edited = {"order_id": "A-1", "amount": 50.0}
            thread = reviewer(world, "maria", "approve", payload=edited)
            result = await Runner.run(agent, "Refund order A-1")
            await asyncio.to_thread(thread.join)
            return result

    result = asyncio.run(run())
    assert executed == [("A-1", 50.0)]
    assert tool_outputs(result) == ["refunded 50.0 on A-1"]
    assert result.final_output == "Finished."


def test_a_denied_call_does_not_run_and_the_model_hears_why(world):
    executed: list = []

    async def run():
        async with AsyncCountersign(world.api_key, world.url) as cs:
            agent = make_agent(cs, executed, action="refund.issue", pause=False, call_id="c2")
            thread = reviewer(world, "sam", "deny", reason="Refund window closed")
            result = await Runner.run(agent, "Refund order A-1")
            await asyncio.to_thread(thread.join)
            return result

    result = asyncio.run(run())
    assert executed == []
    assert tool_outputs(result) == ["Not done: refund.issue was denied: Refund window closed"]


def test_a_paused_run_is_filed_saved_and_resumed_from_the_decision(world):
    executed: list = []

    async def run():
        async with AsyncCountersign(world.api_key, world.url) as cs:
            agent = make_agent(cs, executed, action="transfer.refund", pause=True, call_id="c3")
            first = await Runner.run(agent, "Refund order A-1")
            assert len(first.interruptions) == 1
            [filed] = await file_interruptions(first, client=cs)
            saved = first.to_state().to_string()  # the process could stop here

            world.decide("maria", filed.id, "approve", payload={"order_id": "A-1", "amount": 7.0})
            state = await RunState.from_string(agent, saved)
            state = await resolve_interruptions(state, client=cs, timeout=10)
            result = await Runner.run(agent, state)
            assert (await cs.requests.list()).count == 1  # filing and running: one request
            return result

    result = asyncio.run(run())
    assert executed == [("A-1", 7.0)]
    assert result.final_output == "Finished."


def test_a_paused_run_denied_is_rejected_with_the_reason(world):
    executed: list = []

    async def run():
        async with AsyncCountersign(world.api_key, world.url) as cs:
            agent = make_agent(cs, executed, action="refund.issue", pause=True, call_id="c4")
            first = await Runner.run(agent, "Refund order A-1")
            [filed] = await file_interruptions(first, client=cs)
            world.decide("sam", filed.id, "deny", reason="Chargeback open")
            state = await resolve_interruptions(first, client=cs, timeout=10)
            return await Runner.run(agent, state)

    result = asyncio.run(run())
    assert executed == []
    assert tool_outputs(result) == ["Not done: refund.issue was denied: Chargeback open"]
