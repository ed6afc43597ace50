"""The small holes: four eyes by person, strict JSON in the browser, a bounded
and checked payload preview, simulation within what one may view."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django.utils.html import escape
from guardian.shortcuts import assign_perm

from approvals import escalation
from approvals.models import ApprovalRequest
from policies.models import Policy
from tests.helpers import INVOICE, decide, reviewer_client

SIM = "/api/v1/policies/simulate"
PAYMENT = {
    "action": "payment.release",
    "summary": "Release payment 77",
    "payload": {"payment": 77, "amount": 5000.0},
}


def create(bot, body: dict) -> dict:
    response = bot.post("/api/v1/requests", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def browser(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password="pw")
    return client


@pytest.mark.parametrize("named", ["Maria", "MARIA", "maria@EXAMPLE.com"])
def test_the_person_a_request_is_for_neither_approves_nor_claims_it(bot, maria, tom, named):
    created = create(bot, {**INVOICE, "requester": {"on_behalf_of": named}})
    row = ApprovalRequest.objects.get(pk=created["id"])
    assert row.on_behalf_of_user.username == "maria"

    claimed = maria.post(f"/api/v1/requests/{created['id']}/claim")
    assert claimed.status_code == 403
    assert "Four eyes" in claimed.json()["detail"]
    assert decide(maria, created["id"], "approve").status_code == 403
    assert tom.post(f"/api/v1/requests/{created['id']}/claim").status_code == 200
    assert decide(tom, created["id"], "approve").status_code == 200


def test_an_unknown_requester_name_bars_nobody_else(bot, maria):
    created = create(bot, {**INVOICE, "requester": {"on_behalf_of": "someone-else"}})
    assert ApprovalRequest.objects.get(pk=created["id"]).on_behalf_of_user is None
    assert decide(maria, created["id"], "approve").status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        '{"payment": 77, "amount": NaN}',
        '{"payment": 77, "note": "a\\u0000b"}',
        '{"payment": ' + "[" * 100 + "]" * 100 + "}",
        '{"payment": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
    ids=["nan", "nul", "deep", "very-deep"],
)
def test_the_decision_form_refuses_json_the_api_refuses(bot, users, payload):
    created = create(bot, PAYMENT)
    response = browser("maria").post(
        f"/requests/{created['id']}/decide", {"outcome": "approve", "payload": payload}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.content.decode()
    assert not ApprovalRequest.objects.get(pk=created["id"]).votes.exists()


def test_the_decision_form_refuses_a_nul_in_the_reason(bot, users):
    created = create(bot, PAYMENT)
    response = browser("maria").post(
        f"/requests/{created['id']}/decide", {"outcome": "deny", "reason": "no\x00pe"}
    )
    assert response.status_code == 400
    assert ApprovalRequest.objects.get(pk=created["id"]).status == "pending"


def test_the_preview_shows_the_diff_to_who_may_edit(bot, users):
    created = create(bot, PAYMENT)
    response = browser("maria").post(
        f"/requests/{created['id']}/preview", {"payload": '{"payment": 77, "amount": 4000.0}'}
    )
    assert response.status_code == 200
    assert "4000.0" in response.content.decode()


def test_the_preview_is_refused_for_a_rule_that_is_not_editable(bot, users):
    created = create(bot, INVOICE)
    response = browser("maria").post(f"/requests/{created['id']}/preview", {"payload": "{}"})
    assert response.status_code == 403


def test_the_preview_is_refused_once_the_request_is_decided(bot, users):
    created = create(bot, PAYMENT)
    decide(reviewer_client(users["maria"]), created["id"], "deny", reason="no")
    response = browser("tom").post(f"/requests/{created['id']}/preview", {"payload": "{}"})
    assert response.status_code == 403


def test_the_preview_is_refused_to_a_reviewer_who_does_not_own_it_now(bot, users):
    created = create(bot, PAYMENT)
    reviewer_client(users["maria"]).post(f"/api/v1/requests/{created['id']}/claim")
    response = browser("tom").post(f"/requests/{created['id']}/preview", {"payload": "{}"})
    assert response.status_code == 403


def test_the_preview_is_refused_to_the_person_it_was_requested_for(bot, users):
    """They may not approve it, so they have no edits to preview either."""
    created = create(bot, {**PAYMENT, "requester": {"on_behalf_of": "maria"}})
    response = browser("maria").post(f"/requests/{created['id']}/preview", {"payload": "{}"})
    assert response.status_code == 403
    assert (
        browser("tom").post(f"/requests/{created['id']}/preview", {"payload": "{}"}).status_code
        == 200
    )


def test_a_large_payload_is_compared_by_key_not_line_by_line(bot, users):
    big = {f"line{i}": "x" * 60 for i in range(400)}  # about 30 KiB
    created = create(bot, {**PAYMENT, "payload": big})
    edited = {**big, "line7": "changed", "extra": 1}
    del edited["line9"]
    import json

    response = browser("maria").post(
        f"/requests/{created['id']}/preview", {"payload": json.dumps(edited)}
    )
    text = response.content.decode()
    assert "by top-level key" in text
    assert "changed line7" in text and "added extra" in text and "removed line9" in text


def test_simulation_hides_the_policies_the_caller_may_not_view(config):
    from rest_framework.test import APIClient

    fin = get_user_model().objects.create_user("fin", password="pw", is_staff=True)
    assign_perm("policies.view_policy", fin, Policy.objects.get(name="finance-invoices"))
    client = APIClient()
    client.force_authenticate(fin)

    own = client.post(SIM, {"action": "invoice.discrepancy"}, format="json").json()
    assert own["policy"]["name"] == "finance-invoices"
    other = client.post(SIM, {"action": "refund.large"}, format="json").json()
    assert other["matched"] is True and other["hidden"] is True
    assert other["policy"] is None and other["levels"] == []
    assert "support-lead" not in str(other) and "customer-refunds" not in str(other)


def test_the_admin_simulation_hides_them_too(config):
    get_user_model().objects.create_user("fin", password="pw", is_staff=True)
    assign_perm(
        "policies.change_policy",
        get_user_model().objects.get(username="fin"),
        Policy.objects.get(name="finance-invoices"),
    )
    page = browser("fin").post(
        "/admin/policies/policy/simulate/", {"body": '{"action": "refund.large"}', "agent": ""}
    )
    text = page.content.decode()
    assert "Routed by a policy you may not view" in text
    assert "support-lead" not in text


def test_the_request_page_offers_the_requester_neither_approve_nor_claim(bot, users):
    created = create(bot, {**INVOICE, "requester": {"on_behalf_of": "Maria"}})
    own = browser("maria").get(f"/requests/{created['id']}").content.decode()
    assert 'id="approve"' not in own and ">Claim<" not in own
    assert 'id="deny"' in own and "Four eyes" in own
    colleague = browser("tom").get(f"/requests/{created['id']}").content.decode()
    assert 'id="approve"' in colleague and ">Claim<" in colleague


def test_the_page_says_why_in_the_words_decide_would_refuse_with(bot, maria, tom):
    created = create(bot, {**INVOICE, "requester": {"on_behalf_of": "Maria"}})
    own = browser("maria").get(f"/requests/{created['id']}").content.decode()
    refused = decide(maria, created["id"], "approve")
    assert refused.status_code == 403
    assert escape(refused.json()["detail"]) in own
    # While tom holds the claim, maria may neither approve nor deny: no form at all.
    assert tom.post(f"/api/v1/requests/{created['id']}/claim").status_code == 200
    page = browser("maria").get(f"/requests/{created['id']}").content.decode()
    assert 'id="deny"' not in page and 'id="approve"' not in page and "Claimed by tom" in page
    assert decide(maria, created["id"], "deny", reason="no").status_code == 403


def test_a_reader_outside_the_owning_role_sees_why_and_no_form(bot, maria):
    created = create(bot, INVOICE)
    with time_machine.travel(timezone.now() + timedelta(minutes=31), tick=False):
        escalation.sweep()
        page = browser("maria").get(f"/requests/{created['id']}").content.decode()
        refused = decide(maria, created["id"], "deny", reason="no")
    assert refused.status_code == 403
    assert 'id="deny"' not in page and escape(refused.json()["detail"]) in page
