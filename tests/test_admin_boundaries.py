"""The admin's boundaries: a permission on one object never grows into more."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from guardian.shortcuts import assign_perm, get_perms

from approvals.models import Agent
from policies.models import Policy, glob_within


def staff_client(username: str, *perms_on: tuple[str, object | None]) -> tuple[Client, object]:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    for perm, obj in perms_on:
        if obj is None:
            app, codename = perm.split(".")
            from django.contrib.auth.models import Permission

            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app, codename=codename)
            )
        else:
            assign_perm(perm, user, obj)
    client = Client()
    assert client.login(username=username, password="pw")
    return client, user


def rule_form(policy: Policy, **changes) -> dict:
    """The policy's change form as the admin posts it, with ``changes`` to rule 0."""
    data = {
        "priority": str(policy.priority),
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    rules = list(policy.rules.order_by("position"))
    data["rules-TOTAL_FORMS"] = data["rules-INITIAL_FORMS"] = str(len(rules))
    for i, rule in enumerate(rules):
        row = {
            "id": rule.pk, "policy": policy.pk, "position": rule.position, "name": rule.name,
            "actions": rule.actions, "when": rule.when, "action_class": rule.action_class,
            "levels": rule.levels, "on_timeout": rule.on_timeout, "approvals": rule.approvals,
            "remind": rule.remind,
        }  # fmt: skip
        for flag in ("fail_open", "editable", "ticket"):
            if getattr(rule, flag):
                row[flag] = "on"
        if i == 0:
            row.update(changes)
        data.update({f"rules-{i}-{k}": v for k, v in row.items()})
    return data


def test_a_viewer_cannot_open_or_use_the_object_permission_pages(config):
    finance = Policy.objects.get(name="finance-invoices")
    client, user = staff_client("viewer", ("policies.view_policy", finance))

    base = f"/admin/policies/policy/{finance.pk}/permissions/"
    assert client.get(base).status_code == 403
    granted = client.post(
        f"{base}user-manage/{user.pk}/", {"permissions": ["change_policy", "view_policy"]}
    )
    assert granted.status_code == 403
    assert "change_policy" not in get_perms(user, finance)


def test_an_editor_cannot_grant_role_membership_either(config):
    from policies.models import Role

    role = Role.objects.get(name="cfo")
    client, user = staff_client("editor", ("policies.change_role", None))
    response = client.post(
        f"/admin/policies/role/{role.pk}/permissions/user-manage/{user.pk}/",
        {"permissions": ["act_for_role"]},
    )
    assert response.status_code == 403
    assert user not in role.members()


def test_a_superuser_still_manages_object_permissions(root, config):
    finance = Policy.objects.get(name="finance-invoices")
    assert root.get(f"/admin/policies/policy/{finance.pk}/permissions/").status_code == 200


def test_staff_edits_keep_every_rule_inside_the_policy_scope(config):
    finance = Policy.objects.get(name="finance-invoices")
    client, _ = staff_client("fin", ("policies.change_policy", finance))
    url = f"/admin/policies/policy/{finance.pk}/change/"

    capture = client.post(url, rule_form(finance, actions="*"))
    assert capture.status_code == 200  # the form again, with the error
    assert "outside this policy&#x27;s scope" in capture.content.decode()
    finance.refresh_from_db()
    assert finance.current_version.number == 1

    inside = client.post(url, rule_form(finance, actions="invoice.discrepancy, payment.big"))
    assert inside.status_code == 302, inside.content.decode()[:3000]
    finance.refresh_from_db()
    assert finance.current_version.number == 2


def test_staff_cannot_change_priority_or_scope(config):
    finance = Policy.objects.get(name="finance-invoices")
    client, _ = staff_client("fin", ("policies.change_policy", finance))
    form = rule_form(finance, name="renamed") | {"priority": "-1000", "scope": "*"}
    response = client.post(f"/admin/policies/policy/{finance.pk}/change/", form)
    assert response.status_code == 302
    finance.refresh_from_db()
    assert (finance.priority, finance.scope) == (100, "invoice.discrepancy, payment.*")
    assert finance.current_version.spec["priority"] == 100


def test_a_superuser_sets_the_scope_and_priority(root, config):
    finance = Policy.objects.get(name="finance-invoices")
    form = rule_form(finance) | {"priority": "5", "scope": "invoice.*, payment.*"}
    assert root.post(f"/admin/policies/policy/{finance.pk}/change/", form).status_code == 302
    finance.refresh_from_db()
    assert (finance.priority, finance.scope) == (5, "invoice.*, payment.*")


@pytest.mark.parametrize(
    ("inner", "outer", "inside"),
    [
        ("refund.small", "refund.*", True),
        ("refund.*", "refund.*", True),
        ("refund.?", "refund.*", True),
        ("*", "refund.*", False),
        ("refund*", "refund.*", False),
        ("refund.*", "refund.?", False),
        ("refund.a", "refund.[ab]", False),
    ],
)
def test_scope_containment_is_sound(inner, outer, inside):
    assert glob_within(inner, outer) is inside


def test_a_viewer_cannot_rotate_an_agents_secret(agent):
    client, _ = staff_client("looker", ("approvals.view_agent", None))
    before = Agent.objects.get(pk=agent.agent.pk).signing_secret
    client.post(
        "/admin/approvals/agent/",
        {"action": "rotate_secret", "_selected_action": [agent.agent.pk]},
    )
    assert Agent.objects.get(pk=agent.agent.pk).signing_secret == before


def test_a_rotated_secret_is_shown_on_the_page_never_in_a_cookie(root, agent):
    response = root.post(
        "/admin/approvals/agent/",
        {"action": "rotate_secret", "_selected_action": [agent.agent.pk]},
    )
    secret = Agent.objects.get(pk=agent.agent.pk).signing_secret
    assert response.status_code == 200
    assert secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert all(secret not in morsel.value for morsel in response.cookies.values())
    assert "messages" not in response.cookies


def test_a_rotated_key_is_shown_once_and_the_old_one_stops_working(root, agent):
    from tests.helpers import agent_client

    old = agent_client(agent)
    response = root.post(
        "/admin/approvals/agent/",
        {"action": "rotate_key", "_selected_action": [agent.agent.pk]},
    )
    key = re.search(r"<code[^>]*>(cs_[^<]+)</code>", response.content.decode()).group(1)
    assert old.get("/api/v1/requests").status_code == 401
    fresh = agent_client(type(agent)(agent=agent.agent, api_key=key, signing_secret=""))
    assert fresh.get("/api/v1/requests").status_code == 200


def test_a_viewer_cannot_redeliver(config):
    client, _ = staff_client("looker", ("approvals.view_delivery", None))
    page = client.get("/admin/approvals/delivery/")
    assert page.status_code == 200
    assert b"redeliver" not in page.content.lower()
