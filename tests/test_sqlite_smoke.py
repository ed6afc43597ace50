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
from rest_framework.authtoken.models import Token
from django.contrib.auth import get_user_model
token = Token.objects.get_or_create(user=get_user_model().objects.get(username="maria"))[0]
reviewer = Client(HTTP_AUTHORIZATION="Token " + token.key, HTTP_HOST="127.0.0.1")
decided = reviewer.post(f"/api/v1/requests/{{request_id}}/decision",
    {{"outcome": "approve"}}, content_type="application/json")
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
