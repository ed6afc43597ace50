"""A real LangGraph graph (checkpointer, scripted fake chat model) paused on a tool
call by Countersign, resumed through approve, a reviewer's edit and deny."""

from __future__ import annotations

import pytest
from countersign_sdk.langgraph import (
    ApprovalToolNode,
    Gate,
    approval_key,
    pending_requests,
    resume_when_decided,
)
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

pytestmark = [pytest.mark.slow]


def build(cs, script: list[AIMessage], executed: list, action: str = "refund.issue"):
    @tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund a customer's order."""
        executed.append(("refund", order_id, amount))
        return f"refunded {amount} on {order_id}"

    @tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        executed.append(("lookup", order_id))
        return f"{order_id}: shipped"

    model = GenericFakeChatModel(messages=iter(script))

    def agent(state: MessagesState):
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState):
        return "tools" if state["messages"][-1].tool_calls else END

    tools = ApprovalToolNode(
        [issue_refund, lookup_order],
        gates={
            "issue_refund": Gate(
                action=action,
                summary="Refund {amount} on {order_id}",
                context=lambda order_id, amount: {"amount": amount, "order": order_id},
            )
        },
        client=cs,
    )
    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


def refund_call(call_id: str, amount: float = 30.0) -> dict:
    return {"name": "issue_refund", "args": {"order_id": "A-1", "amount": amount}, "id": call_id}


def lookup_call(call_id: str) -> dict:
    return {"name": "lookup_order", "args": {"order_id": "A-1"}, "id": call_id}


def script(*calls: dict) -> list[AIMessage]:
    return [AIMessage(content="", tool_calls=list(calls)), AIMessage(content="All done.")]


def start(graph, thread: str):
    config = {"configurable": {"thread_id": thread}}
    state = graph.invoke({"messages": [HumanMessage("Refund order A-1")]}, config)
    return config, state


def tool_messages(state) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in state["messages"] if isinstance(m, ToolMessage)}


def test_approve_runs_the_tool_once_and_the_rerun_makes_no_second_request(world):
    executed: list = []
    with world.client() as cs:
        graph = build(cs, script(refund_call("call_1"), lookup_call("call_2")), executed)
        config, state = start(graph, "thread-1")

        assert "__interrupt__" in state
        [request_id] = pending_requests(graph, config)
        assert executed == []  # not even the ungated lookup ran before the decision
        request = cs.requests.get(request_id)
        assert request.summary == "Refund 30.0 on A-1"
        assert request.payload == {"order_id": "A-1", "amount": 30.0}

        world.decide("sam", request_id, "approve")
        state = graph.invoke(Command(resume=request_id), config)  # the node runs again
        assert cs.requests.list().count == 1  # ...and found its request by its key

    assert state["messages"][-1].content == "All done."
    assert sorted(executed) == [("lookup", "A-1"), ("refund", "A-1", 30.0)]
    assert tool_messages(state)["call_1"].content == "refunded 30.0 on A-1"


def test_an_edit_runs_the_edited_arguments(world):
    executed: list = []
    with world.client() as cs:
        # transfer.* is the test policy's editable rule (finance managers decide).
        calls = script(refund_call("call_9", amount=500.0))
        graph = build(cs, calls, executed, action="transfer.refund")
        config, _ = start(graph, "thread-2")
        [request_id] = pending_requests(graph, config)
        world.decide("maria", request_id, "approve", payload={"order_id": "A-1", "amount": 50.0})
        state = graph.invoke(resume_when_decided(graph, config, client=cs, timeout=10), config)
        assert cs.requests.get(request_id).decision.edited is True
    assert executed == [("refund", "A-1", 50.0)]
    assert tool_messages(state)["call_9"].content == "refunded 50.0 on A-1"


def test_deny_becomes_a_tool_message_with_the_reason(world):
    executed: list = []
    with world.client() as cs:
        graph = build(cs, script(refund_call("call_3")), executed)
        config, _ = start(graph, "thread-3")
        [request_id] = pending_requests(graph, config)
        world.decide("sam", request_id, "deny", reason="Outside the refund window")
        state = graph.invoke(Command(resume=request_id), config)

    message = tool_messages(state)["call_3"]
    assert executed == []
    assert message.status == "error"
    assert "denied by support-lead: Outside the refund window" in message.content
    assert state["messages"][-1].content == "All done."


def test_keys_differ_per_thread_and_call_and_ignore_task_ids():
    first = {"configurable": {"thread_id": "t", "checkpoint_ns": "tools:1f0a-task"}}
    rerun = {"configurable": {"thread_id": "t", "checkpoint_ns": "tools:9b3c-task"}}
    assert approval_key(first, "call_1") == approval_key(rerun, "call_1")
    assert approval_key(first, "call_1") != approval_key(first, "call_2")
    other_thread = {"configurable": {"thread_id": "u", "checkpoint_ns": "tools:1f0a-task"}}
    assert approval_key(first, "call_1") != approval_key(other_thread, "call_1")


def test_parallel_gated_calls_are_decided_and_routed_each_on_its_own(world):
    executed: list = []
    with world.client() as cs:
        calls = script(refund_call("call_a", amount=10.0), refund_call("call_b", amount=20.0))
        graph = build(cs, calls, executed)
        config, _ = start(graph, "thread-4")
        ids = pending_requests(graph, config)
        assert len(ids) == 2  # one interrupt carrying both requests
        by_amount = {cs.requests.get(i).payload["amount"]: i for i in ids}
        world.decide("sam", by_amount[20.0], "deny", reason="Too much")
        world.decide("sam", by_amount[10.0], "approve")
        state = graph.invoke(Command(resume=ids), config)
        assert cs.requests.list().count == 2

    messages = tool_messages(state)
    assert executed == [("refund", "A-1", 10.0)]
    assert messages["call_a"].content == "refunded 10.0 on A-1"
    assert "denied by support-lead: Too much" in messages["call_b"].content
