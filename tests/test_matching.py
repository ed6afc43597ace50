"""Routing: first matching rule by policy priority then rule order; CEL conditions."""

from __future__ import annotations

import logging

import pytest

from approvals.models import ApprovalRequest
from policies.config import apply_documents, load_yaml
from policies.matching import ConditionFailed, route

TIERED = """
kind: Policy
name: tiered-invoices
priority: 50
rules:
  - name: large-usd
    actions: ["invoice.*"]
    when: 'context.amount >= 1000.0 && context.currency == "USD"'
    class: internal
    levels: [{role: cfo, deadline: 1h}]
  - name: everything-else
    actions: ["invoice.*"]
    class: internal
    levels: [{role: finance-manager, deadline: 1h}]
"""


@pytest.fixture
def tiered(config):
    apply_documents(load_yaml(TIERED), author="tests")


def routed(action="invoice.discrepancy", **context):
    found = route(action=action, context=context, payload={}, agent="bot", requester={})
    return found and (found.policy_name, found.rule["name"])


def test_a_true_condition_routes_to_its_rule(tiered):
    assert routed(amount=1240.0, currency="USD") == ("tiered-invoices", "large-usd")


def test_a_false_condition_falls_through_to_the_next_rule(tiered):
    assert routed(amount=10.0, currency="USD") == ("tiered-invoices", "everything-else")


@pytest.mark.parametrize(
    "context",
    [{"currency": "USD"}, {"amount": "5000", "currency": "USD"}, {"amount": None}],
    ids=["missing field", "string amount", "null amount"],
)
def test_a_condition_that_fails_on_the_data_stops_routing_and_is_logged(tiered, caplog, context):
    with (
        caplog.at_level(logging.WARNING, logger="policies.conditions"),
        pytest.raises(ConditionFailed) as failed,
    ):
        routed(**context)
    assert (failed.value.policy_name, failed.value.rule_name) == ("tiered-invoices", "large-usd")
    assert "large-usd" in caplog.text and "invoice.discrepancy" in caplog.text


def test_a_guarded_condition_falls_through_on_missing_data(config):
    apply_documents(
        load_yaml(TIERED.replace("'context.amount", "'has(context.amount) && context.amount")),
        author="tests",
    )
    assert routed(currency="USD") == ("tiered-invoices", "everything-else")


def test_lower_priority_numbers_are_consulted_first(config):
    assert routed("refund.issue") == ("customer-refunds", "refund-review")


def test_nothing_matches_an_unknown_action(config):
    assert routed("rocket.launch") is None


def test_the_api_routes_by_condition(tiered, bot):
    body = {
        "action": "invoice.discrepancy",
        "summary": "big one",
        "context": {"amount": 5000.0, "currency": "USD"},
    }
    response = bot.post("/api/v1/requests", body, format="json").json()
    assert response["owner_role"] == "cfo"
    assert response["policy"]["rule"] == "large-usd"


def test_the_api_fails_closed_when_a_condition_cannot_be_evaluated(tiered, bot):
    body = {
        "action": "invoice.discrepancy",
        "summary": "amount sent as text",
        "context": {"amount": "5000", "currency": "USD"},
    }
    response = bot.post("/api/v1/requests", body, format="json")
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == "condition_error"
    assert "tiered-invoices" in error["detail"] and "large-usd" in error["detail"]
    assert error["condition"]["rule"] == "large-usd"
    assert "overload" in error["condition"]["error"]
    assert ApprovalRequest.objects.count() == 0  # nothing stored, no lax fallback
