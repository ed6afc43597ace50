"""An MCP client session with the countersign-mcp server, as an MCP host would
drive it: ask, ask again while pending, then act or take the fallback.
With the demo running (``bash .ci/demo``):

    export COUNTERSIGN_URL=http://127.0.0.1:8000 COUNTERSIGN_API_KEY=...
    python examples/mcp_session.py --order 4711 --amount 42.50

The server is started over stdio (``countersign-mcp``); each tool call waits at
most 45 s, under the ~60 s at which MCP clients give up on a call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import time

from mcp import Client, StdioServerParameters

log = logging.getLogger("mcp-session")


async def session(order: str, amount: float, wait: float) -> int:
    command = shutil.which("countersign-mcp") or os.path.join(
        os.path.dirname(sys.executable), "countersign-mcp"
    )
    env = {key: os.environ[key] for key in ("COUNTERSIGN_URL", "COUNTERSIGN_API_KEY")}
    deadline = time.monotonic() + wait
    async with Client(StdioServerParameters(command=command, env=env)) as client:
        answer = (
            await client.call_tool(
                "request_approval",
                {
                    "action": "refund.issue",
                    "summary": f"Refund order #{order} (${amount:.2f})",
                    "context": {"order": order, "amount": amount, "currency": "USD"},
                    "payload": {"order": order, "amount": amount},
                    "idempotency_key": f"mcp-session:{order}",
                },
            )
        ).structured_content
        while answer["status"] == "pending" and time.monotonic() < deadline:
            log.info("%s", answer["next"])
            wait_seconds = max(1, min(45, int(deadline - time.monotonic())))
            answer = (
                await client.call_tool(
                    "get_approval",
                    {"request_id": answer["request_id"], "wait_seconds": wait_seconds},
                )
            ).structured_content
        if answer["status"] == "pending":
            await client.call_tool(
                "cancel_approval",
                {"request_id": answer["request_id"], "reason": "the agent stopped waiting"},
            )
            log.info("fallback: no decision in time; request withdrawn")
        elif answer["status"] == "approved":
            payload = answer["decision"]["payload"]
            print(f"refund issued: order {payload['order']}, ${payload['amount']:.2f}")
            return 0
        else:
            log.info("fallback: %s", answer["next"])
    print("to customer: we could not refund this automatically; a colleague will contact you.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--order", required=True)
    parser.add_argument("--amount", type=float, required=True)
    parser.add_argument("--wait", type=float, default=900)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
    return asyncio.run(session(args.order, args.amount, args.wait))


if __name__ == "__main__":
    raise SystemExit(main())
