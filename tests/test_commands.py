"""The commands of the README (Commands), as an operator runs them."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from approvals.models import Agent
from policies.models import Policy


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_create_agent_prints_its_credentials_once_and_stores_only_a_hash(config):
    printed = json.loads(run("create_agent", "payments-bot", "--actions", "invoice.*", "--json"))

    assert printed["name"] == "payments-bot"
    assert printed["api_key"].startswith("cs_")
    assert printed["signing_secret"].startswith("whsec_")
    agent = Agent.objects.get(name="payments-bot")
    assert agent.action_globs == ["invoice.*"]
    assert printed["api_key"] not in (agent.key_hash, agent.key_prefix)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {printed['api_key']}")
    assert client.get("/api/v1/requests").status_code == 200


def test_the_signing_secret_is_32_random_bytes_in_standard_webhooks_format(db):
    import base64

    printed = json.loads(run("create_agent", "a", "--json"))
    assert len(base64.b64decode(printed["signing_secret"].removeprefix("whsec_"))) == 32


def test_create_agent_refuses_a_duplicate_name(db):
    run("create_agent", "bot")
    with pytest.raises(CommandError, match="already exists"):
        run("create_agent", "bot")


def test_create_agent_refuses_a_bad_callback_url(db):
    with pytest.raises(CommandError, match="not a URL"):
        run("create_agent", "bot", "--callback-url", "nope")


def test_loaddemo_twice_is_harmless_and_prints_a_working_key(db):
    first = run("loaddemo")
    second = run("loaddemo")

    key = next(line.split()[-1] for line in second.splitlines() if "API key" in line)
    assert key == next(line.split()[-1] for line in first.splitlines() if "API key" in line)
    assert Policy.objects.count() == 3
    assert all(p.current_version.number == 1 for p in Policy.objects.all())
    assert get_user_model().objects.get(username="maria").check_password("demo")

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = {"action": "invoice.discrepancy", "summary": "INV-1 is $10 over"}
    created = client.post("/api/v1/requests", body, format="json").json()
    assert created["owner_role"] == "finance-manager"
    assert [level["deadline"] for level in created["levels"]] == ["PT30M", "PT2H"]


def test_drf_create_token_gives_a_reviewer_a_token(users):
    out = run("drf_create_token", "maria")
    assert "Generated token" in out
