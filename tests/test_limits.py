"""Limits per agent and per reviewer: defaults, overrides, and the 429 they answer."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from approvals.api import throttling
from approvals.api.throttling import FileStore
from approvals.models import Agent
from approvals.rates import Rate
from tests.helpers import INVOICE, agent_client, decide


def test_create_agent_stores_its_own_limits(config, capsys):
    call_command("create_agent", "eager-bot", "--rate-limit", "120/min", "--max-waits", "50")
    agent = Agent.objects.get(name="eager-bot")
    assert (agent.rate_limit, agent.max_waits) == ("120/min", 50)
    assert str(throttling.agent_rate(agent)) == "120/min"


def test_create_agent_refuses_a_rate_it_cannot_read(config):
    with pytest.raises(CommandError, match="120/min"):
        call_command("create_agent", "eager-bot", "--rate-limit", "lots")
    assert not Agent.objects.filter(name="eager-bot").exists()


def test_without_overrides_an_agent_gets_the_documented_defaults(agent, settings):
    settings.APPROVALS_AGENT_RATE_LIMIT = "600/min"
    settings.APPROVALS_AGENT_MAX_WAITS = 100
    assert throttling.agent_rate(agent.agent) == Rate(600, 60)
    assert throttling.agent_max_waits(agent.agent) == 100


def test_an_agent_over_its_rate_gets_429_and_others_do_not(bot, agent, other_agent):
    Agent.objects.filter(pk=agent.agent.pk).update(rate_limit="2/h")
    assert bot.post("/api/v1/requests", INVOICE, format="json").status_code == 201
    assert bot.get("/api/v1/requests").status_code == 200
    response = bot.get("/api/v1/requests")

    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert 1700 <= int(response["Retry-After"]) <= 1800  # one call every 30 minutes
    assert agent_client(other_agent).get("/api/v1/requests").status_code == 200


def test_a_reviewer_over_the_rate_gets_429(maria, invoice, settings):
    settings.APPROVALS_REVIEWER_RATE_LIMIT = "1/min"
    assert decide(maria, invoice["id"], "approve").status_code == 200
    response = decide(maria, invoice["id"], "approve")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) >= 1


def test_the_embedded_store_counts_across_connections(tmp_path):
    """The file store is what several web processes share without Redis."""
    first, second = FileStore(str(tmp_path / "l.sqlite3")), FileStore(str(tmp_path / "l.sqlite3"))
    rate = Rate(2, 60)
    assert first.take("a", rate) == 0
    assert second.take("a", rate) == 0
    assert 25 < first.take("a", rate) <= 30
    assert second.take("b", rate) == 0

    token, _ = first.hold("w", limit=1, lease=60)
    assert token is not None
    refused, retry = second.hold("w", limit=1, lease=60)
    assert refused is None and 55 < retry <= 60
    second.release("w", token)
    assert first.hold("w", limit=1, lease=60)[0] is not None


def test_the_admin_edits_an_agents_limits(root, agent):
    response = root.get(f"/admin/approvals/agent/{agent.agent.pk}/change/")
    assert b'name="rate_limit"' in response.content
    assert b'name="max_waits"' in response.content


def test_settings_refuse_a_malformed_default_rate(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "APPROVALS_AGENT_RATE_LIMIT": "fast", "APPROVALS_VAR_DIR": str(tmp_path)}
    env["DJANGO_SETTINGS_MODULE"] = "approvals_site.settings"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "APPROVALS_AGENT_RATE_LIMIT" in result.stderr
