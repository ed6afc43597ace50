"""Lint that catches chains which look fine but hang or loop back: a single
level, a first deadline longer than the SLA, two levels that reach the same
people, a role nobody can be told about."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from policies.config import apply_documents, load_yaml

ROLES = """
kind: Role
name: finance-manager
members: [maria, tom]
---
kind: Role
name: cfo
members: [carol]
---
kind: ActionClass
name: internal
sla: 1h
"""


def warnings_after(users, extra: str, rule: str) -> list[str]:
    text = ROLES + extra + "---\nkind: Policy\nname: finance\nrules:\n" + rule
    return apply_documents(load_yaml(text), author="tests").report.warnings


CHAIN = """
  - name: invoice
    actions: ["invoice.*"]
    class: internal
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
"""


def test_a_sound_chain_has_no_warnings(users):
    assert warnings_after(users, "", CHAIN) == []


def test_a_single_level_has_no_named_fallback(users):
    rule = CHAIN.replace("      - {role: cfo, deadline: 2h}\n", "")
    [warning] = warnings_after(users, "", rule)
    assert "rule 'invoice': a single level, no named fallback" in warning


def test_a_first_deadline_longer_than_the_class_sla(users):
    rule = CHAIN.replace("deadline: 30m", "deadline: 90m")
    [warning] = warnings_after(users, "", rule)
    assert "level 1: deadline 1h30m is longer than the SLA of class 'internal' (1h)" in warning


def test_consecutive_roles_sharing_a_member_land_in_the_same_inbox(users):
    shared = ROLES.replace("members: [carol]", "members: [carol, tom]")
    text = shared + "---\nkind: Policy\nname: finance\nrules:\n" + CHAIN
    warnings = apply_documents(load_yaml(text), author="tests").report.warnings
    assert any(
        "levels 1 and 2: roles 'finance-manager' and 'cfo' share the member(s) tom" in w
        for w in warnings
    ), warnings


def test_consecutive_roles_sharing_a_notification_address(users):
    text = (
        ROLES.replace(
            "members: [maria, tom]", "members: [maria, tom]\nemail: money@example.com"
        ).replace("members: [carol]", "members: [carol]\nemail: money@example.com")
        + "---\nkind: Policy\nname: finance\nrules:\n"
        + CHAIN
    )
    warnings = apply_documents(load_yaml(text), author="tests").report.warnings
    assert any("share the notification address(s) money@example.com" in w for w in warnings)


def test_members_through_a_group_count_as_shared(users):
    from django.contrib.auth.models import Group
    from guardian.shortcuts import assign_perm

    apply_documents(load_yaml(ROLES), author="tests")
    board = Group.objects.create(name="board")
    users["maria"].groups.add(board)
    from policies.models import Role

    assign_perm("policies.act_for_role", board, Role.objects.get(name="cfo"))
    warnings = warnings_after(users, "", CHAIN)
    assert any("share the member(s) maria" in w for w in warnings), warnings


def test_a_role_with_no_reachable_address(users):
    get_user_model().objects.filter(username="carol").update(email="")
    warnings = warnings_after(users, "", CHAIN)
    assert any("level 2: role 'cfo' has no reachable address" in warning for warning in warnings), (
        warnings
    )


@pytest.mark.parametrize("email", ["cfo@example.com"])
def test_a_role_email_is_an_address_even_if_members_have_none(users, email):
    get_user_model().objects.filter(username="carol").update(email="")
    text = ROLES.replace("members: [carol]", f"members: [carol]\nemail: {email}")
    warnings = apply_documents(
        load_yaml(text + "---\nkind: Policy\nname: finance\nrules:\n" + CHAIN), author="tests"
    ).report.warnings
    assert warnings == []


def test_simulation_shows_the_same_warnings(users, staff_client):
    warnings_after(users, "", CHAIN.replace("deadline: 30m", "deadline: 90m"))
    body = staff_client.post(
        "/api/v1/policies/simulate", {"action": "invoice.late"}, format="json"
    ).json()
    assert any("longer than the SLA of class 'internal'" in w for w in body["warnings"])


@pytest.fixture
def staff_client(users):
    from django.contrib.auth.models import Permission

    from tests.helpers import reviewer_client

    admin = get_user_model().objects.create_user("ada", "ada@example.com", "pw", is_staff=True)
    admin.user_permissions.add(Permission.objects.get(codename="view_policy"))
    return reviewer_client(admin)
