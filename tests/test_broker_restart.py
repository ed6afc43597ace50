"""Redis stopped for several seconds and started again under real workers:
they reconnect and go on, and a deadline still fires on time afterwards.

With celery 5.7.0 both workers died here ("Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')") while
returning the deadline timers they held; pyproject.toml keeps celery below it.
"""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest, AuditEvent
from policies.config import apply_documents, load_yaml
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SLOW_ENOUGH = """
kind: Policy
name: twelve-seconds
priority: 1
rules:
  - name: one-level
    actions: ["timed.*"]
    class: internal
    levels:
      - {role: finance-manager, deadline: 12s}
      - {role: cfo, deadline: 1h}
"""


def test_workers_survive_a_redis_restart_and_the_deadline_fires(
    config, bot, processes, redis_server
):
    apply_documents(load_yaml(SLOW_ENOUGH), author="tests")
    engine = processes.worker("engine")  # all lanes
    second = processes.worker("second")
    processes.beat()
    for name in ("engine", "second"):
        wait_for(lambda n=name: "ready" in processes.log(n), timeout=60, what=f"{name} ready")
    body = {"action": "timed.pay", "summary": "timed", "context": {"amount": 5}}
    created = bot.post("/api/v1/requests", body, format="json").json()
    due_at = ApprovalRequest.objects.get(pk=created["id"]).due_at
    # A worker holds the precise timer for it (an unacknowledged ETA message).
    timer = "approvals.tasks.fire_deadline["  # as in "Task <name>[<id>] received"
    wait_for(
        lambda: timer in processes.log("engine") + processes.log("second"),
        timeout=15, what="the deadline timer to be taken",
    )  # fmt: skip

    redis_server.stop()
    for name in ("engine", "second"):  # each tried to reconnect and failed at least twice
        wait_for(
            lambda n=name: processes.log(n).count("Cannot connect to redis") >= 2,
            timeout=30, what=f"{name} to retry the broker",
        )  # fmt: skip
    assert engine.poll() is None and second.poll() is None
    redis_server.start()

    wait_for(
        lambda: ApprovalRequest.objects.get(pk=created["id"]).level == 2,
        timeout=30, what="the escalation after the restart",
    )  # fmt: skip
    escalated = AuditEvent.objects.get(request_id=created["id"], kind="escalated")
    assert escalated.data["late_seconds"] < 2.0, (escalated.data, due_at)
    assert engine.poll() is None and second.poll() is None
    for name in ("engine", "second"):
        assert "Unrecoverable error" not in processes.log(name)
        assert processes.log(name).count("Connected to redis") >= 2
