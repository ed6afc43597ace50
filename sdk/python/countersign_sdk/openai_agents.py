"""Gate an OpenAI Agents SDK function tool on a Countersign decision (``[openai-agents]``).

Two ways, both running the tool with the approved arguments (a reviewer's edits
included; the Agents SDK's own approvals cannot edit arguments):

1. Wait inside the tool call (simple, for short decisions):

       refund = gated_tool(issue_refund, action="refund.issue", summary="Refund {order_id}")
       agent = Agent(name="support", tools=[refund])

   Each call files a request (keyed by the tool call id, so a retried call finds it),
   long-polls for the decision, then runs; a refusal is the tool's answer to the model.

2. Pause the run (``pause=True``: the tool ``needs_approval``) and resume from a
   serialisable ``RunState``, for decisions that take hours:

       result = await Runner.run(agent, "Refund A-1")
       await file_interruptions(result)                   # one request per interruption
       saved = result.to_state().to_string()              # keep it; the process may stop
       ...
       state = await RunState.from_string(agent, saved)
       state = await resolve_interruptions(state)         # approve/reject from decisions
       result = await Runner.run(agent, state)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from agents import FunctionTool, RunState, function_tool
from agents.items import ToolApprovalItem
from agents.tool_context import ToolContext

from countersign_sdk.client import AsyncCountersign
from countersign_sdk.models import ApprovalRequest

GATE_ATTRIBUTE = "_countersign_gate"


@dataclasses.dataclass(frozen=True)
class _Gate:
    action: str
    summary: str | Callable[..., str]
    context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None
    timeout: float
    client: AsyncCountersign | None

    def body(self, tool_name: str, call_id: str, arguments: str) -> dict[str, Any]:
        args = json.loads(arguments or "{}")
        if callable(self.summary):
            summary = self.summary(**args)
        else:
            summary = self.summary.format_map(_Default({"tool": tool_name, **args}))
        context = self.context(**args) if callable(self.context) else self.context
        return {
            "action": self.action,
            "summary": summary,
            "context": {"tool": tool_name, **dict(context or {})},
            "payload": args,
            "idempotency_key": f"openai-agents:{tool_name}:{call_id}",
        }


class _Default(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def gated_tool(
    tool: FunctionTool | Callable[..., Any],
    *,
    action: str,
    summary: str | Callable[..., str] = "{tool} call",
    context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None,
    client: AsyncCountersign | None = None,
    timeout: float = 3600,
    pause: bool = False,
) -> FunctionTool:
    """A FunctionTool that runs only once Countersign approves the call."""
    base = tool if isinstance(tool, FunctionTool) else function_tool(tool)
    gate = _Gate(action, summary, context, timeout, client)

    async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
        body = gate.body(base.name, ctx.tool_call_id, arguments)
        async with _client(gate.client) as cs:
            request = await cs.requests.create(**body)
            request = await cs.requests.wait(request.id, timeout=gate.timeout)
        if request.status != "approved":
            return refusal(request)
        assert request.decision is not None and request.decision.payload is not None
        request.decision.verify()
        return await base.on_invoke_tool(ctx, json.dumps(request.decision.payload))

    gated = dataclasses.replace(
        base, on_invoke_tool=invoke, needs_approval=True if pause else base.needs_approval
    )
    setattr(gated, GATE_ATTRIBUTE, gate)
    return gated


def refusal(request: ApprovalRequest) -> str:
    decision = request.decision
    reason = decision.reason if decision and decision.reason else "no reason given"
    if request.status == "expired":
        return f"Not done: nobody approved {request.action} in time; it expired."
    return f"Not done: {request.action} was {request.status}: {reason}"


def _gate_of(item: ToolApprovalItem) -> _Gate | None:
    for tool in getattr(item.agent, "tools", []):
        if getattr(tool, "name", None) == item.tool_name:
            return getattr(tool, GATE_ATTRIBUTE, None)
    return None


def _call(item: ToolApprovalItem) -> tuple[str, str]:
    raw = item.raw_item
    if isinstance(raw, dict):
        return raw.get("call_id") or raw.get("id") or "", raw.get("arguments") or "{}"
    return getattr(raw, "call_id", "") or getattr(raw, "id", ""), getattr(raw, "arguments", "{}")


async def file_interruptions(
    result_or_state: Any, *, client: AsyncCountersign | None = None
) -> list[ApprovalRequest]:
    """File a request for every interruption of a gated tool (idempotent: the key is
    the tool call id, the same the tool uses when it finally runs)."""
    filed = []
    for item in _interruptions(result_or_state):
        gate = _gate_of(item)
        if gate is None:
            continue
        call_id, arguments = _call(item)
        async with _client(client or gate.client) as cs:
            filed.append(
                await cs.requests.create(**gate.body(item.tool_name or "", call_id, arguments))
            )
    return filed


async def resolve_interruptions(
    result_or_state: Any,
    *,
    client: AsyncCountersign | None = None,
    timeout: float | None = 3600,
) -> RunState:
    """Wait for each gated interruption's decision; approve or reject it on the state
    (a refusal carries the reason to the model). Run the returned state again."""
    state = result_or_state if isinstance(result_or_state, RunState) else result_or_state.to_state()
    for item in state.get_interruptions():
        gate = _gate_of(item)
        if gate is None:
            continue
        call_id, arguments = _call(item)
        body = gate.body(item.tool_name or "", call_id, arguments)
        async with _client(client or gate.client) as cs:
            request = await cs.requests.create(**body)
            request = await cs.requests.wait(request.id, timeout=timeout)
        if request.status == "approved":
            state.approve(item)
        else:
            state.reject(item, rejection_message=refusal(request))
    return state


def _interruptions(result_or_state: Any) -> list[ToolApprovalItem]:
    if isinstance(result_or_state, RunState):
        return result_or_state.get_interruptions()
    return list(getattr(result_or_state, "interruptions", []))


class _client:
    """The given client, or one from the environment closed after use."""

    def __init__(self, client: AsyncCountersign | None) -> None:
        self.given = client
        self.own: AsyncCountersign | None = None

    async def __aenter__(self) -> AsyncCountersign:
        if self.given is not None:
            return self.given
        own = self.own = AsyncCountersign()
        return own

    async def __aexit__(self, *exc: object) -> None:
        if self.own is not None:
            await self.own.close()
