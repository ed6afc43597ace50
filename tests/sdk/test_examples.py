"""The examples run against a live server, through approve and their fallbacks."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from countersign_sdk import Countersign

from tests.processes import ROOT, wait_for

pytestmark = [pytest.mark.slow]


def run_example(world, script: str, *args: str, reviewer=None) -> str:
    env = {
        **world.live.processes.env,
        "COUNTERSIGN_URL": world.url,
        "COUNTERSIGN_API_KEY": world.api_key,
    }
    thread = None
    if reviewer is not None:
        thread = threading.Thread(target=reviewer)
        thread.start()
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if thread is not None:
        thread.join(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def decides(world, name: str, outcome: str, **body):
    def pending():
        with Countersign(world.api_key, world.url) as cs:
            return cs.requests.list(status="pending").results

    def run():
        [request] = wait_for(pending, timeout=60, what="the example's request")
        world.decide(name, request.id, outcome, **body)

    return run


def test_the_refund_agent_refunds_once_approved(world):
    out = run_example(
        world, "refund_agent.py", "--order", "4711", "--amount", "42.5",
        reviewer=decides(world, "sam", "approve"),
    )  # fmt: skip
    assert "refund issued: order 4711, $42.50" in out


def test_the_refund_agent_falls_back_on_deny_and_on_no_decision(world):
    out = run_example(
        world, "refund_agent.py", "--order", "4712", "--amount", "10",
        reviewer=decides(world, "sam", "deny", reason="Order already refunded"),
    )  # fmt: skip
    assert "fallback: refund denied: Order already refunded" in out
    assert "refund issued" not in out

    out = run_example(world, "refund_agent.py", "--order", "4713", "--amount", "5", "--wait", "1")
    assert "request withdrawn" in out
    with Countersign(world.api_key, world.url) as cs:
        assert cs.requests.find("refund-agent:4713").status == "cancelled"


def test_the_langgraph_example_resumes_on_approve_and_falls_back_on_deny(world):
    out = run_example(
        world, "langgraph_refund.py", "--order", "5001", "--amount", "20",
        reviewer=decides(world, "sam", "approve"),
    )  # fmt: skip
    assert "done: refunded $20.00 on order 5001" in out
    out = run_example(
        world, "langgraph_refund.py", "--order", "5002", "--amount", "20",
        reviewer=decides(world, "sam", "deny", reason="Fraud check failed"),
    )  # fmt: skip
    assert "fallback: Not done: refund.issue was denied by support-lead: Fraud check failed" in out


def test_the_mcp_session_acts_on_approve_and_falls_back_on_deny(world):
    out = run_example(
        world, "mcp_session.py", "--order", "6001", "--amount", "12",
        reviewer=decides(world, "sam", "approve"),
    )  # fmt: skip
    assert "refund issued: order 6001, $12.00" in out
    out = run_example(
        world, "mcp_session.py", "--order", "6002", "--amount", "12",
        reviewer=decides(world, "sam", "deny", reason="Not eligible"),
    )  # fmt: skip
    assert "fallback: Not approved (denied: Not eligible)" in out
