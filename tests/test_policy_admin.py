"""Admins edit policies with their rules inline, validated like apply; every
save makes a new version; "test a request" shows what would happen."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from guardian.shortcuts import assign_perm

from policies.models import Policy, Rule


def form_data(policy: Policy, **rule_changes) -> dict:
    """The change form as the browser would post it, from the current rows."""
    rules = list(policy.rules.all())
    data = {
        "priority": policy.priority,
        "rules-TOTAL_FORMS": len(rules),
        "rules-INITIAL_FORMS": len(rules),
        "rules-MIN_NUM_FORMS": 0,
        "rules-MAX_NUM_FORMS": 1000,
        "versions-TOTAL_FORMS": 0,
        "versions-INITIAL_FORMS": 0,
    }
    for i, rule in enumerate(rules):
        fields = {
            "id": rule.pk, "policy": policy.pk, "position": rule.position, "name": rule.name,
            "actions": rule.actions, "when": rule.when, "action_class": rule.action_class,
            "levels": rule.levels, "on_timeout": rule.on_timeout, "approvals": rule.approvals,
            "remind": rule.remind,
        }  # fmt: skip
        for flag in ("fail_open", "ticket", "editable"):
            if getattr(rule, flag):
                fields[flag] = "on"
        if i == 0:
            fields.update(rule_changes)
        data.update({f"rules-{i}-{key}": value for key, value in fields.items()})
    return data


def change(client: Client, policy: Policy, **rule_changes):
    return client.post(
        f"/admin/policies/policy/{policy.pk}/change/", form_data(policy, **rule_changes)
    )


def test_the_rules_are_shown_inline_for_editing(root):
    policy = Policy.objects.get(name="finance-invoices")
    page = root.get(f"/admin/policies/policy/{policy.pk}/change/").content.decode()
    assert "finance-manager 30m\ncfo 2h" in page


def test_an_edit_makes_a_new_version_and_leaves_requests_in_flight_alone(root, bot, invoice):
    policy = Policy.objects.get(name="finance-invoices")

    response = change(root, policy, levels="finance-manager 45m\ncfo 2h")

    assert response.status_code == 302, response.content.decode()[:3000]
    version = Policy.objects.get(pk=policy.pk).current_version
    assert (version.number, version.author) == (2, "root")
    assert version.spec["rules"][0]["levels"][0]["deadline"] == 45 * 60
    assert "+    deadline: 45m" in version.diff
    assert bot.get(f"/api/v1/requests/{invoice['id']}").json()["levels"][0]["deadline"] == "PT30M"


def test_saving_without_changes_makes_no_version(root):
    policy = Policy.objects.get(name="finance-invoices")
    assert change(root, policy).status_code == 302
    assert Policy.objects.get(pk=policy.pk).current_version.number == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("levels", "finance-manager 30m\nfinance-manager 2h", "also owns level 1"),
        ("levels", "ghost 30m", "unknown role"),
        ("levels", "finance-manager soon", "is not a duration"),
        ("when", "context.amount >= ", "does not compile at line 1"),
        ("action_class", "nope", "unknown action class"),
        ("on_timeout", "approve", "set fail_open: true"),
    ],
)
def test_errors_are_shown_at_the_field_and_nothing_is_saved(root, field, value, message):
    policy = Policy.objects.get(name="finance-invoices")

    response = change(root, policy, **{field: value})

    assert response.status_code == 200
    errors = response.context["inline_admin_formsets"][0].formset.forms[0].errors
    assert any(message in error for error in errors[field]), errors
    assert Policy.objects.get(pk=policy.pk).current_version.number == 1


def test_a_finance_admin_edits_the_finance_policy_only(config):
    finance_admin = get_user_model().objects.create_user("fin", password="pw", is_staff=True)
    finance = Policy.objects.get(name="finance-invoices")
    assign_perm("policies.change_policy", finance_admin, finance)
    client = Client()
    client.login(username="fin", password="pw")

    assert change(client, finance, levels="finance-manager 1h\ncfo 2h").status_code == 302
    assert Policy.objects.get(pk=finance.pk).current_version.number == 2
    refunds = Policy.objects.get(name="customer-refunds")
    assert change(client, refunds, levels="support-lead 1h").status_code in (302, 403)
    assert Policy.objects.get(pk=refunds.pk).current_version.number == 1


def test_apply_rewrites_the_editable_rows(config):
    assert list(
        Rule.objects.filter(policy__name="finance-invoices").values_list("name", flat=True)
    ) == [
        "invoice-discrepancy",
        "big-payment",
    ]


def test_test_a_request_shows_the_route_and_stores_nothing(root):
    from approvals.models import ApprovalRequest

    body = {"action": "invoice.discrepancy", "summary": "x", "context": {"amount": 5.0}}
    page = root.post(
        "/admin/policies/policy/simulate/", {"body": json.dumps(body), "agent": ""}
    ).content.decode()

    assert "Routed by finance-invoices v1, rule invoice-discrepancy" in page
    assert "a manual-review ticket opens for cfo" in page
    assert not ApprovalRequest.objects.exists()


def test_a_new_policy_is_added_with_its_rules(root):
    data = {
        "name": "payroll",
        "priority": 5,
        "rules-TOTAL_FORMS": 1, "rules-INITIAL_FORMS": 0,
        "rules-MIN_NUM_FORMS": 0, "rules-MAX_NUM_FORMS": 1000,
        "versions-TOTAL_FORMS": 0, "versions-INITIAL_FORMS": 0,
        "rules-0-position": 0, "rules-0-name": "payroll-change",
        "rules-0-actions": "payroll.*, salary.change", "rules-0-action_class": "internal",
        "rules-0-levels": "finance-manager 1h\ncfo 4h", "rules-0-on_timeout": "deny",
        "rules-0-approvals": 1,
    }  # fmt: skip

    response = root.post("/admin/policies/policy/add/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    version = Policy.objects.get(name="payroll").current_version
    assert version.number == 1
    assert version.spec["priority"] == 5
    rule = version.spec["rules"][0]
    assert rule["actions"] == ["payroll.*", "salary.change"]
    assert rule["levels"] == [
        {"role": "finance-manager", "deadline": 3600},
        {"role": "cfo", "deadline": 14400},
    ]
    assert rule["on_timeout"] == "deny"
