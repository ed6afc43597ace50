"""The embedded default: SQLite under var/, nothing else running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, django
django.setup()
from django.test import Client
key = json.load(open("{var}/demo-agent.json"))["api_key"]
agent = Client(HTTP_AUTHORIZATION="Bearer " + key, HTTP_HOST="127.0.0.1")
created = agent.post("/api/v1/requests", {{"action": "invoice.discrepancy",
    "summary": "INV-7 is $80 over"}}, content_type="application/json")
assert created.status_code == 201, created.content
request_id = created.json()["id"]
from approvals.tokens import issue_token
from django.contrib.auth import get_user_model
token = issue_token(get_user_model().objects.get(username="maria"))
reviewer = Client(HTTP_AUTHORIZATION="Token " + token, HTTP_HOST="127.0.0.1")
decided = reviewer.post(f"/api/v1/requests/{{request_id}}/decision",
    {{"outcome": "approve"}}, content_type="application/json")
from django.db import DatabaseError
from approvals.models import AuditEvent
for change in (lambda: AuditEvent.objects.update(summary="x"), AuditEvent.objects.all().delete):
    try:
        change()
        raise SystemExit("the audit trail was changed on SQLite")
    except DatabaseError as exc:
        assert "append-only" in str(exc), exc
print(json.dumps(decided.json()))
"""


def test_the_demo_runs_on_sqlite_without_any_service(tmp_path: Path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(APPROVALS_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="approvals_site.settings")

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )

    manage("migrate", "-v0")
    manage("loaddemo")
    manage("loaddemo")  # twice is harmless
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(var=tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert (tmp_path / "countersign.sqlite3").exists()
    assert json.loads(result.stdout.strip().splitlines()[-1])["status"] == "approved"


FAST = """
kind: Policy
name: fast
priority: 1
rules:
  - name: two-seconds
    actions: ["fast.*"]
    class: internal
    levels: [{role: finance-manager, deadline: 2s}, {role: cfo, deadline: 60s}]
"""

CREATE = """
import json, django
django.setup()
from django.test import Client
key = json.load(open("{var}/demo-agent.json"))["api_key"]
agent = Client(HTTP_AUTHORIZATION="Bearer " + key, HTTP_HOST="127.0.0.1")
created = agent.post("/api/v1/requests", {{"action": "fast.pay", "summary": "fast"}},
    content_type="application/json")
print(created.json()["id"])
"""


def test_the_embedded_broker_runs_the_engine_without_redis(tmp_path: Path):
    import sqlite3
    import uuid

    from tests.processes import Processes, wait_for

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(APPROVALS_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="approvals_site.settings")
    (tmp_path / "fast.yaml").write_text(FAST)
    for args in (["migrate", "-v0"], ["loaddemo"], ["apply", "-f", str(tmp_path / "fast.yaml")]):
        subprocess.run(
            [sys.executable, "manage.py", *args], env=env, check=True, capture_output=True,
            timeout=300,
        )  # fmt: skip
    processes = Processes(tmp_path, env)
    try:
        processes.worker()
        processes.beat()
        created = subprocess.run(
            [sys.executable, "-c", CREATE.format(var=tmp_path)], env=env, check=True,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        request_id = uuid.UUID(created.stdout.strip().splitlines()[-1]).hex

        def level() -> int:
            with sqlite3.connect(tmp_path / "countersign.sqlite3") as db:
                row = db.execute(
                    "SELECT level FROM approvals_approvalrequest WHERE id = ?", (request_id,)
                ).fetchone()
            return row[0]

        wait_for(lambda: level() == 2, timeout=60, what="the escalation on SQLite")
    finally:
        processes.stop_all()
