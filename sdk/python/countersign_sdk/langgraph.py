"""Pause a LangGraph graph on a tool call until a human decides (``[langgraph]`` extra).

    from countersign_sdk.langgraph import ApprovalToolNode, Gate, resume_when_decided

    tools = ApprovalToolNode(
        [issue_refund, lookup_order],
        gates={"issue_refund": Gate(action="refund.issue", summary="Refund {order_id}")},
    )
    graph.add_node("tools", tools)            # in place of langgraph's ToolNode
    ...
    state = graph.invoke(inputs, config)      # stops with __interrupt__ while pending
    state = graph.invoke(resume_when_decided(graph, config), config)   # or from a callback:
    state = graph.invoke(Command(resume=request_id), config)

How it behaves:

- Every gated call of the model's last message is filed as an approval request before
  any tool runs, then the node calls ``interrupt()`` once with the pending requests (one
  interrupt per node run, so parallel tool calls cannot be misrouted on resume).
- LangGraph re-runs an interrupted node from its first line; the create is idempotent
  across those re-runs: its key is made of the thread id, the checkpoint namespace and
  the tool call id, so a re-run (or a restarted process) finds the same request.
- The resume value only needs to name the request(s); the node reads each decision
  from the API (a request still pending then is waited on, up to ``Gate.timeout``).
- Approved: the tool runs with the approved arguments (a reviewer's edits included).
  Denied, expired or cancelled: the tool does not run; its ToolMessage says so, with
  the reason, so the model can tell the user and take its fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.types import Command, interrupt

from countersign_sdk.client import Countersign
from countersign_sdk.models import ApprovalRequest

Text = str | Callable[..., str]


@dataclass(frozen=True)
class Gate:
    """How a tool's calls are filed: ``summary`` and ``context`` may be callables of the
    call's arguments; a ``summary`` string is formatted with them."""

    action: str
    summary: Text = "{tool} call"
    context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None
    timeout: float = 60.0  # how long a resumed node waits on a request still pending


def approval_key(config: RunnableConfig, tool_call_id: str) -> str:
    """Thread, checkpoint namespace (node names only: task ids change between runs)
    and tool call id: the same on every re-run of the node, different for every call."""
    configurable = config.get("configurable", {})
    thread = configurable.get("thread_id", "")
    namespace = "|".join(
        part.split(":")[0] for part in str(configurable.get("checkpoint_ns", "")).split("|")
    )
    return f"langgraph:{thread}:{namespace}:{tool_call_id}"


class ApprovalToolNode:
    """A graph node that runs the last AI message's tool calls, the gated ones only
    once approved. Returns ``{"messages": [ToolMessage, ...]}``."""

    def __init__(
        self,
        tools: Sequence[BaseTool],
        *,
        gates: Mapping[str, Gate],
        client: Countersign | None = None,
        messages_key: str = "messages",
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        unknown = set(gates) - set(self.tools)
        if unknown:
            raise ValueError(f"gates for tools that are not given: {sorted(unknown)}")
        self.gates = dict(gates)
        self._client = client
        self.messages_key = messages_key

    @property
    def client(self) -> Countersign:
        if self._client is None:
            self._client = Countersign()
        return self._client

    def __call__(self, state: Any, config: RunnableConfig) -> dict[str, Any]:
        messages = state[self.messages_key] if isinstance(state, Mapping) else state
        last = messages[-1]
        if not isinstance(last, AIMessage):
            raise ValueError("ApprovalToolNode expects the last message to be an AIMessage")
        calls = list(last.tool_calls)
        filed: dict[str, ApprovalRequest] = {}
        for call in calls:
            gate = self.gates.get(call["name"])
            if gate is not None:
                filed[call["id"] or ""] = self._file(gate, call, config)
        pending = [req for req in filed.values() if not req.is_terminal]
        if pending:
            # Nothing has run yet: on the re-run after resume, everything runs once.
            interrupt(
                {
                    "countersign": [
                        {
                            "request_id": req.id,
                            "action": req.action,
                            "summary": req.summary,
                            "owner_role": req.owner_role,
                            "due_at": req.due_at.isoformat() if req.due_at else None,
                        }
                        for req in pending
                    ]
                }
            )
            # Resumed: read every decision from the API, never from the resume value.
            for call_id, req in filed.items():
                if not req.is_terminal:
                    gate = self.gates[next(c["name"] for c in calls if c["id"] == call_id)]
                    filed[call_id] = self.client.requests.wait(req.id, timeout=gate.timeout)
        return {self.messages_key: [self._run(call, filed.get(call["id"] or "")) for call in calls]}

    def _file(self, gate: Gate, call: Mapping[str, Any], config: RunnableConfig) -> ApprovalRequest:
        return file_call(self.client, gate, call, config)

    def _run(self, call: Mapping[str, Any], request: ApprovalRequest | None) -> ToolMessage:
        tool = self.tools.get(call["name"])
        if tool is None:
            return ToolMessage(
                content=f"Error: no tool named {call['name']}",
                tool_call_id=call["id"], name=call["name"], status="error",
            )  # fmt: skip
        args = dict(call["args"])
        if request is not None:
            if request.status != "approved":
                return ToolMessage(
                    content=refusal(request), tool_call_id=call["id"], name=call["name"],
                    status="error", artifact={"countersign_request_id": request.id},
                )  # fmt: skip
            assert request.decision is not None and request.decision.payload is not None
            request.decision.verify()
            args = dict(request.decision.payload)
        result = tool.invoke(args)
        return ToolMessage(content=_text(result), tool_call_id=call["id"], name=call["name"])


def file_call(
    client: Countersign, gate: Gate, call: Mapping[str, Any], config: RunnableConfig
) -> ApprovalRequest:
    """File (or find again, on a re-run) the approval request for one tool call."""
    if not call.get("id"):
        raise ValueError(f"a gated call of {call['name']} has no tool call id to key it by")
    args = dict(call["args"])
    fields = {"tool": call["name"], **args}
    if callable(gate.summary):
        summary = gate.summary(**args)
    else:
        summary = gate.summary.format_map(_Default(fields))
    context = gate.context(**args) if callable(gate.context) else gate.context
    return client.requests.create(
        action=gate.action,
        summary=summary,
        context={"tool": call["name"], **dict(context or {})},
        payload=args,
        idempotency_key=approval_key(config, call["id"]),
    )


def refusal(request: ApprovalRequest) -> str:
    """What the model is told when a gated call is not approved."""
    decision = request.decision
    reason = decision.reason if decision and decision.reason else "no reason given"
    by = decision.by if decision else {}
    who = by.get("role") or by.get("system") or by.get("agent") or "?"
    if request.status == "expired":
        ticket = f"; follow-up ticket {request.ticket.id}" if request.ticket else ""
        return f"Not done: nobody approved {request.action} in time (expired{ticket})."
    return f"Not done: {request.action} was {request.status} by {who}: {reason}"


def _text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, ToolMessage):
        return str(result.content)
    return str(result)


class _Default(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def pending_requests(graph: Any, config: RunnableConfig) -> list[str]:
    """The ids of the requests a paused thread is waiting on."""
    ids = []
    for task in graph.get_state(config).tasks:
        for pause in task.interrupts:
            value = pause.value
            if isinstance(value, Mapping):
                ids += [item["request_id"] for item in value.get("countersign", [])]
    return ids


def resume_when_decided(
    graph: Any,
    config: RunnableConfig,
    *,
    client: Countersign | None = None,
    timeout: float | None = 3600,
) -> Command:
    """Wait (long-polling) until every request the thread waits on is decided; then the
    ``Command(resume=…)`` to invoke the graph with."""
    cs = client or Countersign()
    ids = pending_requests(graph, config)
    for request_id in ids:
        cs.requests.wait(request_id, timeout=timeout)
    return Command(resume={"countersign": ids})
