"""An MCP server for Countersign (``[mcp]`` extra, on the official ``mcp`` package).

    countersign-mcp                                   # stdio (what desktop clients start)
    countersign-mcp --transport streamable-http --host 127.0.0.1 --port 8765   # at /mcp

It reads COUNTERSIGN_URL and COUNTERSIGN_API_KEY. Tools:

- ``request_approval(action, summary, context, payload, idempotency_key, wait_seconds)``
- ``get_approval(request_id, wait_seconds)``
- ``cancel_approval(request_id, reason)``
- ``list_approvals(status, action)``

MCP clients give up on a tool call after about 60 s, so a call waits at most
``MAX_WAIT`` (45 s) for a decision; while the request is pending the answer says so
and tells the caller to call ``get_approval`` again (each call waits again).
Without an ``idempotency_key``, one is made from the request's content, so a model
that retries the same call re-attaches to its request instead of asking twice.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from countersign_sdk._canonical import sha256_hex
from countersign_sdk.client import AsyncCountersign
from countersign_sdk.errors import CountersignError, WaitTimeout
from countersign_sdk.models import ApprovalRequest

MAX_WAIT = 45  # seconds: under the ~60 s at which MCP clients time a tool call out

INSTRUCTIONS = """\
Countersign gets a human's approval before you act. Call request_approval before any
consequential action and do it only if the answer's status is "approved", executing
exactly the approved payload (a reviewer may have edited it). While the status is
"pending", call get_approval with the request_id again as the answer says. On
"denied", "expired" or "cancelled", do not act: tell the user, with the reason.
"""


def describe(request: ApprovalRequest) -> dict[str, Any]:
    """What a model needs to act on, with the next step spelled out."""
    answer: dict[str, Any] = {
        "request_id": request.id,
        "status": request.status,
        "action": request.action,
        "summary": request.summary,
        "owner_role": request.owner_role,
        "level": request.level,
        "due_at": request.due_at.isoformat() if request.due_at else None,
    }
    decision = request.decision
    if decision is not None:
        answer["decision"] = {
            "outcome": decision.outcome,
            "by": decision.by,
            "reason": decision.reason,
            "payload": decision.payload,
            "edited": decision.edited,
        }
    if request.ticket is not None:
        answer["ticket"] = {"id": request.ticket.id, "status": request.ticket.status}
    if request.status == "pending":
        answer["ask_again_in_seconds"] = 0
        answer["next"] = (
            f"Still waiting for {request.owner_role}. Call get_approval with request_id "
            f"{request.id!r} again now (each call waits up to {MAX_WAIT} s); do not act yet."
        )
    elif request.status == "approved":
        answer["next"] = "Approved: execute exactly decision.payload, once."
    else:
        why = f": {decision.reason}" if decision and decision.reason else ""
        answer["next"] = f"Not approved ({request.status}{why}). Do not act; tell the user."
    return answer


def build_server(client: AsyncCountersign | None = None, *, max_wait: int = MAX_WAIT) -> MCPServer:
    server = MCPServer("countersign", instructions=INSTRUCTIONS)
    holder: dict[str, AsyncCountersign] = {}

    def cs() -> AsyncCountersign:
        if client is not None:
            return client
        if "client" not in holder:
            holder["client"] = AsyncCountersign()
        return holder["client"]

    async def settle(request: ApprovalRequest, wait_seconds: int) -> dict[str, Any]:
        hold = max(0, min(int(wait_seconds), max_wait))
        if request.is_terminal or hold == 0:
            return describe(request)
        try:
            return describe(await cs().requests.wait(request.id, timeout=hold))
        except WaitTimeout as pending:
            return describe(pending.request)

    @server.tool()
    async def request_approval(
        action: str,
        summary: str,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait_seconds: int = MAX_WAIT,
    ) -> dict[str, Any]:
        """Ask a human to approve an action before doing it; waits up to 45 s for the
        decision. `payload` is exactly what you will execute if approved; `context` is
        what the reviewer needs to decide (amounts, ids, why)."""
        body = {"action": action, "summary": summary, "context": context, "payload": payload}
        key = idempotency_key or "mcp:" + sha256_hex(body)[:48]
        try:
            request = await cs().requests.create(
                action=action,
                summary=summary,
                context=context,
                payload=payload,
                idempotency_key=key,
            )
            return await settle(request, wait_seconds)
        except CountersignError as error:
            raise ToolError(str(error)) from error

    @server.tool()
    async def get_approval(request_id: str, wait_seconds: int = MAX_WAIT) -> dict[str, Any]:
        """The request's status and decision; waits up to 45 s for a decision."""
        try:
            return await settle(await cs().requests.get(request_id), wait_seconds)
        except CountersignError as error:
            raise ToolError(str(error)) from error

    @server.tool()
    async def cancel_approval(request_id: str, reason: str = "") -> dict[str, Any]:
        """Withdraw a pending request you no longer need."""
        try:
            return describe(await cs().requests.cancel(request_id, reason=reason))
        except CountersignError as error:
            raise ToolError(str(error)) from error

    @server.tool()
    async def list_approvals(
        status: str | None = None, action: str | None = None
    ) -> dict[str, Any]:
        """Your requests, newest first (status: pending, approved, denied, expired,
        cancelled)."""
        try:
            page = await cs().requests.list(status=status, action=action)
        except CountersignError as error:
            raise ToolError(str(error)) from error
        return {"count": page.count, "requests": [describe(r) for r in page.results]}

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="countersign-mcp", description=__doc__.split("\n")[0])
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per long-poll
    server = build_server()
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
