"""The countersign-mcp server driven by the official mcp client, over stdio and
streamable HTTP, against the live server."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest
from countersign_sdk import AsyncCountersign
from countersign_sdk.mcp import MAX_WAIT, build_server
from mcp import Client, StdioServerParameters

from tests.processes import free_port, wait_for

pytestmark = [pytest.mark.slow]

SCRIPT = str(Path(sys.executable).parent / "countersign-mcp")
TOOLS = {"request_approval", "get_approval", "cancel_approval", "list_approvals"}
REFUND = {
    "action": "refund.issue",
    "summary": "Refund order A-1 ($30)",
    "context": {"amount": 30.0, "order": "A-1"},
    "payload": {"order_id": "A-1", "amount": 30.0},
}


def stdio(world) -> Client:
    return Client(
        StdioServerParameters(
            command=SCRIPT,
            env={"COUNTERSIGN_URL": world.url, "COUNTERSIGN_API_KEY": world.api_key},
        )
    )


async def call(client: Client, name: str, **arguments):
    result = await client.call_tool(name, arguments)
    return result.structured_content, result


def test_over_stdio_an_agent_asks_is_told_to_ask_again_and_gets_the_decision(world):
    async def session():
        async with stdio(world) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            first, _ = await call(client, "request_approval", **REFUND, wait_seconds=1)
            again, _ = await call(client, "request_approval", **REFUND, wait_seconds=0)
            world.decide("sam", first["request_id"], "approve")
            decided, _ = await call(client, "get_approval", request_id=first["request_id"])
            listed, _ = await call(client, "list_approvals", status="approved")
            return tools, first, again, decided, listed

    tools, first, again, decided, listed = asyncio.run(session())

    assert tools == TOOLS
    assert first["status"] == "pending"
    assert first["ask_again_in_seconds"] == 0
    assert "Call get_approval" in first["next"]
    assert again["request_id"] == first["request_id"]  # a retried call re-attaches
    assert decided["status"] == "approved"
    assert decided["decision"]["payload"] == REFUND["payload"]
    assert [r["request_id"] for r in listed["requests"]] == [first["request_id"]]


def test_over_stdio_deny_cancel_and_errors(world):
    async def session():
        async with stdio(world) as client:
            denied, _ = await call(client, "request_approval", **REFUND, wait_seconds=0)
            world.decide("sam", denied["request_id"], "deny", reason="Already refunded")
            denied, _ = await call(client, "get_approval", request_id=denied["request_id"])
            other = {**REFUND, "summary": "Refund order B-2"}
            pending, _ = await call(client, "request_approval", **other, wait_seconds=0)
            cancelled, _ = await call(
                client, "cancel_approval", request_id=pending["request_id"], reason="not needed"
            )
            _, no_policy = await call(
                client, "request_approval", action="nothing.here", summary="s", wait_seconds=0
            )
            return denied, cancelled, no_policy

    denied, cancelled, no_policy = asyncio.run(session())
    assert denied["status"] == "denied"
    assert denied["decision"]["reason"] == "Already refunded"
    assert "Do not act" in denied["next"]
    assert cancelled["status"] == "cancelled"
    assert no_policy.is_error
    assert "no_policy" in no_policy.content[0].text


def test_a_wait_is_capped_below_the_clients_timeout(world):
    assert MAX_WAIT < 50

    async def session():
        cs = AsyncCountersign(world.api_key, world.url)
        async with cs, Client(build_server(cs, max_wait=1)) as client:
            started = time.monotonic()
            answer, _ = await call(client, "request_approval", **REFUND, wait_seconds=600)
            return answer, time.monotonic() - started

    answer, took = asyncio.run(session())
    assert answer["status"] == "pending"
    assert took < 10


def test_over_streamable_http(world):
    port = free_port()
    world.live.processes.env.update(COUNTERSIGN_URL=world.url, COUNTERSIGN_API_KEY=world.api_key)
    try:
        world.live.processes.start(
            "mcp", SCRIPT, "--transport", "streamable-http", "--port", str(port)
        )
        url = f"http://127.0.0.1:{port}/mcp"

        def listening() -> bool:
            try:
                httpx.get(url, timeout=1)
                return True
            except httpx.HTTPError:
                return False

        wait_for(listening, timeout=30, what="countersign-mcp over HTTP")

        async def session():
            async with Client(url) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
                answer, _ = await call(client, "request_approval", **REFUND, wait_seconds=0)
                return tools, answer

        tools, answer = asyncio.run(session())
    finally:
        world.live.processes.kill("mcp")
        for key in ("COUNTERSIGN_URL", "COUNTERSIGN_API_KEY"):
            world.live.processes.env.pop(key)
    assert tools == TOOLS
    assert answer["status"] == "pending"
