"""Admins see the configuration and the history in Django admin."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from guardian.shortcuts import assign_perm

from approvals.models import Agent
from policies.models import Policy
from tests.helpers import agent_client


@pytest.mark.parametrize(
    "page",
    [
        "/admin/policies/role/",
        "/admin/policies/actionclass/",
        "/admin/policies/policy/",
        "/admin/approvals/agent/",
        "/admin/approvals/approvalrequest/",
        "/admin/approvals/auditevent/",
    ],
)
def test_every_list_page_renders(root, invoice, page):
    assert root.get(page).status_code == 200


def test_a_request_page_shows_its_audit_events_read_only(root, invoice):
    page = root.get(f"/admin/approvals/approvalrequest/{invoice['id']}/change/")
    assert page.status_code == 200
    assert b"created" in page.content
    assert b'name="_save"' not in page.content  # nothing to save: read-only
    delete = root.post(f"/admin/approvals/approvalrequest/{invoice['id']}/delete/")
    assert delete.status_code == 403


def test_a_policy_page_shows_its_versions(root, config):
    policy = Policy.objects.get(name="finance-invoices")
    page = root.get(f"/admin/policies/policy/{policy.pk}/change/")
    assert page.status_code == 200
    assert b"tests" in page.content  # the author of version 1


def test_a_new_agents_key_is_shown_once_and_works(root, config):
    response = root.post(
        "/admin/approvals/agent/add/",
        {"name": "admin-bot", "callback_url": "", "action_globs": "[]", "is_active": "on"},
        follow=True,
    )
    text = response.content.decode()
    key = re.search(r"API key</td><td><code[^>]*>(cs_[^<]+)</code>", text).group(1)
    assert re.search(r"signing secret</td><td><code[^>]*>whsec_", text)

    from approvals.agents import Credentials

    agent = Agent.objects.get(name="admin-bot")
    client = agent_client(Credentials(agent=agent, api_key=key, signing_secret=""))
    assert client.get("/api/v1/requests").status_code == 200
    assert key not in root.get(f"/admin/approvals/agent/{agent.pk}/change/").content.decode()


def test_a_finance_admin_sees_and_edits_finance_policies_only(config):
    finance_admin = get_user_model().objects.create_user("fin", password="pw", is_staff=True)
    finance = Policy.objects.get(name="finance-invoices")
    assign_perm("policies.change_policy", finance_admin, finance)
    client = Client()
    client.login(username="fin", password="pw")

    listing = client.get("/admin/policies/policy/").content.decode()
    assert "finance-invoices" in listing
    assert "customer-refunds" not in listing
    refunds = Policy.objects.get(name="customer-refunds")
    assert client.get(f"/admin/policies/policy/{refunds.pk}/change/").status_code in (302, 403, 404)
    assert client.get(f"/admin/policies/policy/{finance.pk}/change/").status_code == 200
