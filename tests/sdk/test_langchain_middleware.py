"""LangChain's create_agent with CountersignMiddleware: a real agent graph, a
checkpointer and a scripted fake chat model, through approve, edit and deny."""

from __future__ import annotations

import pytest
from countersign_sdk.langchain import CountersignMiddleware
from countersign_sdk.langgraph import Gate, pending_requests
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

pytestmark = [pytest.mark.slow]


class ScriptedChatModel(GenericFakeChatModel):
    """The fake chat model, accepting the tools create_agent binds."""

    def bind_tools(self, tools, **kwargs):
        return self


def build(cs, executed: list, *, action: str, amount: float, call_id: str):
    @tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund a customer's order."""
        executed.append((order_id, amount))
        return f"refunded {amount} on {order_id}"

    call = {"name": "issue_refund", "args": {"order_id": "A-1", "amount": amount}, "id": call_id}
    model = ScriptedChatModel(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="Done.")])
    )
    gate = Gate(action=action, summary="Refund {amount} on {order_id}")
    return create_agent(
        model,
        tools=[issue_refund],
        middleware=[CountersignMiddleware({"issue_refund": gate}, client=cs)],
        checkpointer=InMemorySaver(),
    )


def run(world, agent, thread: str, reviewer: str, outcome: str, **body):
    config = {"configurable": {"thread_id": thread}}
    state = agent.invoke({"messages": [HumanMessage("Refund A-1")]}, config)
    assert "__interrupt__" in state
    [request_id] = pending_requests(agent, config)
    world.decide(reviewer, request_id, outcome, **body)
    return agent.invoke(Command(resume=request_id), config)


def tool_message(state) -> ToolMessage:
    [message] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    return message


def test_approve_runs_once_and_the_rerun_files_no_second_request(world):
    executed: list = []
    with world.client() as cs:
        agent = build(cs, executed, action="refund.issue", amount=30.0, call_id="m1")
        state = run(world, agent, "m-1", "sam", "approve")
        assert cs.requests.list().count == 1
    assert executed == [("A-1", 30.0)]
    assert tool_message(state).content == "refunded 30.0 on A-1"
    assert state["messages"][-1].content == "Done."


def test_an_edit_runs_the_edited_arguments(world):
    executed: list = []
    with world.client() as cs:
        agent = build(cs, executed, action="transfer.refund", amount=900.0, call_id="m2")
        edited = {"order_id": "A-1", "amount": 90.0}
        state = run(world, agent, "m-2", "maria", "approve", payload=edited)
    assert executed == [("A-1", 90.0)]
    assert tool_message(state).content == "refunded 90.0 on A-1"


def test_deny_answers_the_call_with_the_reason(world):
    executed: list = []
    with world.client() as cs:
        agent = build(cs, executed, action="refund.issue", amount=30.0, call_id="m3")
        state = run(world, agent, "m-3", "sam", "deny", reason="Already refunded")
    assert executed == []
    message = tool_message(state)
    assert message.status == "error"
    assert message.content == "Not done: refund.issue was denied by support-lead: Already refunded"
    assert state["messages"][-1].content == "Done."
