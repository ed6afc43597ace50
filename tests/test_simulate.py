"""Simulation: the route a request would take, from the API and the command."""

from __future__ import annotations

import json
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest
from policies.config import apply_documents, load_yaml
from tests.helpers import INVOICE, reviewer_client
from tests.test_matching import TIERED


@pytest.fixture
def staff(config) -> APIClient:
    """Staff who may view every policy (simulation shows only what one may view)."""
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("ops", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_policy"))
    return reviewer_client(user)


@time_machine.travel("2026-11-26T10:00:00Z", tick=False)
def test_it_shows_the_policy_each_levels_owner_and_deadline_and_the_outcome(staff):
    response = staff.post("/api/v1/policies/simulate", INVOICE, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "matched": True,
        "policy": {"name": "finance-invoices", "version": 1, "rule": "invoice-discrepancy"},
        "class": "internal",
        "approvals": 1,
        "levels": [
            {
                "level": 1,
                "role": "finance-manager",
                "deadline": "PT30M",
                "due_at": "2026-11-26T10:30:00Z",
            },
            {"level": 2, "role": "cfo", "deadline": "PT2H", "due_at": "2026-11-26T12:30:00Z"},
        ],
        "outcome": {
            "on_timeout": "expire",
            "status": "expired",
            "at": "2026-11-26T12:30:00Z",
            "ticket_for": "cfo",
        },
        "warnings": [],
    }
    assert not ApprovalRequest.objects.exists()


def test_no_match_says_the_request_would_be_refused(staff):
    body = staff.post("/api/v1/policies/simulate", {"action": "x.y"}, format="json").json()
    assert body["matched"] is False
    assert "422 no_policy" in body["warnings"][0]


def test_it_shows_warnings_for_the_matched_rule(staff):
    from guardian.shortcuts import remove_perm

    from policies.models import Role

    carol = get_user_model().objects.get(username="carol")
    remove_perm("policies.act_for_role", carol, Role.objects.get(name="cfo"))
    body = staff.post("/api/v1/policies/simulate", INVOICE, format="json").json()
    assert any("'cfo' has no members" in w for w in body["warnings"])


def test_only_staff_may_simulate(maria, bot):
    assert maria.post("/api/v1/policies/simulate", INVOICE, format="json").status_code == 403
    assert bot.post("/api/v1/policies/simulate", INVOICE, format="json").status_code == 401


def test_the_command_prints_the_same(config, tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(INVOICE))
    out = StringIO()
    call_command("simulate", "-f", str(path), stdout=out)
    result = json.loads(out.getvalue())
    assert result["policy"]["rule"] == "invoice-discrepancy"
    assert [level["role"] for level in result["levels"]] == ["finance-manager", "cfo"]


def test_the_command_refuses_bad_json(config, tmp_path):
    path = tmp_path / "request.json"
    path.write_text("{")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("simulate", "-f", str(path), stdout=StringIO())


def test_simulation_says_a_request_would_be_refused_when_a_condition_fails(staff):
    apply_documents(load_yaml(TIERED), author="tests")
    body = {"action": "invoice.discrepancy", "summary": "s", "context": {"currency": "USD"}}
    result = staff.post("/api/v1/policies/simulate", body, format="json").json()
    assert result["matched"] is False
    assert result["error"]["code"] == "condition_error"
    assert result["policy"]["rule"] == "large-usd"
    assert "no such field" in result["error"]["error"]
