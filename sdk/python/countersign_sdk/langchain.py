"""Countersign as a middleware for LangChain's ``create_agent`` (``[langchain]`` extra),
in the shape of its ``HumanInTheLoopMiddleware``, with the decision taken by a role in
Countersign instead of by whoever resumes the graph:

    from langchain.agents import create_agent
    from countersign_sdk.langchain import CountersignMiddleware
    from countersign_sdk.langgraph import Gate

    agent = create_agent(
        model, tools=[issue_refund, lookup_order], checkpointer=InMemorySaver(),
        middleware=[CountersignMiddleware({"issue_refund": Gate(action="refund.issue")})],
    )
    state = agent.invoke({"messages": [...]}, config)   # stops with __interrupt__ while pending
    state = agent.invoke(Command(resume=request_id), config)

After the model answers, every gated tool call is filed (idempotently: thread,
checkpoint namespace and tool call id), then one ``interrupt()`` waits for all of
them. On resume each decision is read from the API: approved calls keep their place
with the approved arguments (a reviewer's edits included); the others are answered with a
ToolMessage giving the reason, so they never run, as the human-in-the-loop middleware
does for a reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.config import get_config
from langgraph.types import interrupt

from countersign_sdk.client import Countersign
from countersign_sdk.langgraph import Gate, file_call, refusal
from countersign_sdk.models import ApprovalRequest


class CountersignMiddleware(AgentMiddleware):
    def __init__(self, gates: Mapping[str, Gate], *, client: Countersign | None = None) -> None:
        super().__init__()
        self.gates = dict(gates)
        self._client = client

    @property
    def client(self) -> Countersign:
        if self._client is None:
            self._client = Countersign()
        return self._client

    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        messages = state["messages"]
        last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        if last is None or not last.tool_calls:
            return None
        config = get_config()
        filed: dict[str, ApprovalRequest] = {}
        for call in last.tool_calls:
            gate = self.gates.get(call["name"])
            if gate is not None:
                filed[call["id"] or ""] = file_call(self.client, gate, call, config)
        if not filed:
            return None
        pending = [req for req in filed.values() if not req.is_terminal]
        if pending:
            interrupt(
                {
                    "countersign": [
                        {"request_id": r.id, "action": r.action, "summary": r.summary,
                         "owner_role": r.owner_role}
                        for r in pending
                    ]
                }
            )  # fmt: skip
            for call_id, req in filed.items():
                if not req.is_terminal:
                    name = next(c["name"] for c in last.tool_calls if c["id"] == call_id)
                    timeout = self.gates[name].timeout
                    filed[call_id] = self.client.requests.wait(req.id, timeout=timeout)

        revised, answers = [], []
        for call in last.tool_calls:
            request = filed.get(call["id"] or "")
            if request is None:
                revised.append(call)
            elif request.status == "approved":
                assert request.decision is not None and request.decision.payload is not None
                request.decision.verify()
                revised.append({**call, "args": dict(request.decision.payload)})
            else:
                # Kept, and answered here: the agent's router sends only unanswered calls
                # to the tools and goes back to the model, which reads the reason.
                revised.append(call)
                answers.append(
                    ToolMessage(
                        content=refusal(request), tool_call_id=call["id"], name=call["name"],
                        status="error", artifact={"countersign_request_id": request.id},
                    )
                )  # fmt: skip
        updated = last.model_copy(update={"tool_calls": revised})
        return {"messages": [updated, *answers]}
