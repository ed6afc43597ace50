"""The example receiver resumes a paused run, once, from a real callback."""

from __future__ import annotations

import subprocess
import sys

from approvals import callbacks
from approvals.agents import create_agent
from approvals.models import Delivery
from tests.helpers import INVOICE, agent_client, decide
from tests.processes import ROOT, free_port, wait_for
from tests.test_callbacks import attempt


def test_the_example_agent_resumes_once_on_the_callback(config, maria, tmp_path):
    port = free_port()
    hooked = create_agent("example", callback_url=f"http://127.0.0.1:{port}/callback")
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            [sys.executable, "examples/receiver_agent.py", "--secret", hooked.signing_secret,
             "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "listening" in log.read_text(), timeout=30, what="the example to listen")
        created = agent_client(hooked).post("/api/v1/requests", INVOICE, format="json").json()
        decide(maria, created["id"], "approve")
        delivery = Delivery.objects.get(request_id=created["id"])

        assert attempt(delivery) == "delivered"
        callbacks.redeliver(Delivery.objects.filter(pk=delivery.pk))  # the same event again
        assert attempt(delivery) == "delivered"

        wait_for(lambda: "duplicate" in log.read_text(), timeout=10, what="the duplicate")
        output = log.read_text()
        assert output.count("resumed: approved by") == 1
        assert "executing" in output and "'invoice': 'INV-1042'" in output
    finally:
        agent.terminate()
        agent.wait(timeout=10)
