"""A LangGraph agent paused on a tool call until a human decides. The "model" is
scripted (no LLM key needed); the graph, checkpointer and interrupt are real.
With the demo running (``bash .ci/demo``):

    export COUNTERSIGN_URL=http://127.0.0.1:8000 COUNTERSIGN_API_KEY=...
    python examples/langgraph_refund.py --order 4711 --amount 42.50

The graph stops with an interrupt while the refund is pending; this script then
waits for the decision (a callback handler would do the same with
``graph.invoke(Command(resume=request_id), config)``) and resumes it. A deny or an
expiry becomes the tool's answer, and the agent's fallback tells the customer.
"""

from __future__ import annotations

import argparse
import logging

from countersign_sdk import Countersign
from countersign_sdk.langgraph import ApprovalToolNode, Gate, pending_requests, resume_when_decided
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph

log = logging.getLogger("langgraph-refund")


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refund a customer's order."""
    return f"refunded ${amount:.2f} on order {order_id}"


def build(cs: Countersign, order: str, amount: float):
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{
                        "name": "issue_refund", "id": f"call-{order}",
                        "args": {"order_id": order, "amount": amount},
                    }],
                ),
                AIMessage(content="I have handled the refund request."),
            ]
        )
    )  # fmt: skip

    def agent(state: MessagesState):
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState):
        return "tools" if state["messages"][-1].tool_calls else END

    tools = ApprovalToolNode(
        [issue_refund],
        gates={
            "issue_refund": Gate(action="refund.issue", summary="Refund ${amount} on {order_id}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", required=True)
    parser.add_argument("--amount", type=float, required=True)
    parser.add_argument("--wait", type=float, default=900)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise

    with Countersign() as cs:
        graph = build(cs, args.order, args.amount)
        config = {"configurable": {"thread_id": f"refund-{args.order}"}}
        state = graph.invoke({"messages": [HumanMessage(f"Refund order {args.order}")]}, config)
        if "__interrupt__" in state:
            log.info("paused: waiting for a decision on %s", pending_requests(graph, config))
            resume = resume_when_decided(graph, config, client=cs, timeout=args.wait)
            state = graph.invoke(resume, config)

    [result] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    if result.status == "error":
        log.info("fallback: %s", result.content)
        print("to customer: we could not refund this automatically; a colleague will contact you.")
    else:
        print(f"done: {result.content}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
