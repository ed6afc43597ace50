"""Reviewers decide: only the owning role, four eyes, quorums, idempotent repeats."""

from __future__ import annotations

import hashlib
import json

from approvals.models import ApprovalRequest, AuditEvent
from tests.helpers import agent_client, decide


def kinds(request_id: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(request_id=request_id)
        .order_by("seq")
        .values_list("kind", flat=True)
    )


def test_a_finance_manager_approves_with_the_payload_fingerprint(maria, invoice):
    response = decide(maria, invoice["id"], "approve", reason="matches the PO amendment")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "approved"
    assert body["due_at"] is None
    decision = body["decision"]
    assert decision["outcome"] == "approved"
    assert decision["by"] == {"user": "maria", "role": "finance-manager"}
    assert decision["reason"] == "matches the PO amendment"
    assert decision["payload"] == invoice["payload"]
    canonical = json.dumps(invoice["payload"], sort_keys=True, separators=(",", ":")).encode()
    assert decision["payload_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert decision["edited"] is False
    assert decision["at"].endswith("Z")
    assert kinds(invoice["id"]) == ["created", "approved"]


def test_the_agent_sees_the_decision(bot, maria, invoice):
    decide(maria, invoice["id"], "deny", reason="duplicate invoice")
    body = bot.get(f"/api/v1/requests/{invoice['id']}").json()
    assert body["status"] == "denied"
    assert body["decision"]["reason"] == "duplicate invoice"


def test_a_deny_needs_a_reason(maria, invoice):
    response = decide(maria, invoice["id"], "deny", reason="   ")

    assert response.status_code == 400
    assert response.json()["errors"] == {"reason": ["A reason is required to deny."]}
    assert ApprovalRequest.objects.get(pk=invoice["id"]).status == "pending"


def test_the_fallback_role_cannot_decide_before_escalation(carol, invoice):
    response = decide(carol, invoice["id"], "approve")
    # carol's role (cfo) owns level 2, which has not started: she cannot even see it yet
    assert response.status_code == 404


def test_an_outsider_gets_404(olivia, invoice):
    response = decide(olivia, invoice["id"], "approve")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_reviewer_who_owned_it_earlier_sees_it_but_may_not_decide(maria, invoice):
    from approvals.models import Ownership
    from policies.models import Role

    # Escalate by hand (the escalation engine does this with a conditional UPDATE).
    cfo = Role.objects.get(name="cfo")
    ApprovalRequest.objects.filter(pk=invoice["id"]).update(level=2, owner_role=cfo)
    Ownership.objects.create(request_id=invoice["id"], role=cfo, level=2)

    response = decide(maria, invoice["id"], "approve")
    assert response.status_code == 403
    assert "cfo" in response.json()["detail"]


def test_the_person_it_is_for_may_not_approve_it(users, bot, sam):
    refund = bot.post(
        "/api/v1/requests",
        {"action": "refund.issue", "summary": "Refund $40", "requester": {"on_behalf_of": "sam"}},
        format="json",
    ).json()

    response = decide(sam, refund["id"], "approve")

    assert response.status_code == 403
    assert "Four eyes" in response.json()["detail"]
    assert ApprovalRequest.objects.get(pk=refund["id"]).status == "pending"


def test_the_same_decision_again_is_a_harmless_repeat(maria, tom, invoice):
    first = decide(maria, invoice["id"], "approve")
    again = decide(maria, invoice["id"], "approve")
    from_tom = decide(tom, invoice["id"], "approve")

    assert again.status_code == 200 and from_tom.status_code == 200
    assert again.json() == first.json() == from_tom.json()
    assert kinds(invoice["id"]) == ["created", "approved"]


def test_a_conflicting_decision_on_a_terminal_request_is_409_with_it(maria, tom, invoice):
    decide(maria, invoice["id"], "approve")
    response = decide(tom, invoice["id"], "deny", reason="no")

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert body["status"] == "approved"
    assert body["decision"]["by"]["user"] == "maria"


def test_a_cancelled_request_cannot_be_decided(bot, maria, invoice):
    bot.post(f"/api/v1/requests/{invoice['id']}/cancel")
    response = decide(maria, invoice["id"], "approve")
    assert response.status_code == 409
    assert response.json()["status"] == "cancelled"


def test_a_decision_after_expiry_is_refused_and_recorded_as_late(maria, invoice):
    from django.utils import timezone

    ApprovalRequest.objects.filter(pk=invoice["id"]).update(
        status="expired", due_at=None, decided_at=timezone.now(), decided_by={"system": "timeout"}
    )

    response = decide(maria, invoice["id"], "approve", reason="sorry, was at lunch")

    assert response.status_code == 409
    assert response.json()["status"] == "expired"
    late = AuditEvent.objects.get(request_id=invoice["id"], kind="late_decision")
    assert late.actor == {"user": "maria"}
    assert late.data["outcome"] == "approve"
    assert late.data["reason"] == "sorry, was at lunch"


class TestQuorum:
    """payment.* needs two distinct finance managers, and is editable."""

    def payment(self, bot):
        body = {
            "action": "payment.release",
            "summary": "Release $90,000 to Acme",
            "payload": {"vendor": "Acme", "amount": 90000},
        }
        return bot.post("/api/v1/requests", body, format="json").json()

    def test_it_needs_two_distinct_approvers(self, bot, maria, tom):
        payment = self.payment(bot)

        first = decide(maria, payment["id"], "approve")
        assert first.json()["status"] == "pending"
        assert decide(maria, payment["id"], "approve").json()["status"] == "pending"

        second = decide(tom, payment["id"], "approve")
        assert second.json()["status"] == "approved"
        assert second.json()["decision"]["by"] == {"user": "tom", "role": "finance-manager"}
        assert kinds(payment["id"]) == ["created", "approval_recorded", "approved"]
        approved = AuditEvent.objects.get(request_id=payment["id"], kind="approved")
        assert approved.data["approvers"] == ["maria", "tom"]

    def test_any_deny_ends_it(self, bot, maria, tom):
        payment = self.payment(bot)
        decide(maria, payment["id"], "approve")

        response = decide(tom, payment["id"], "deny", reason="vendor is on hold")

        assert response.json()["status"] == "denied"

    def test_an_edited_payload_is_approved_with_its_fingerprint(self, bot, maria, tom):
        payment = self.payment(bot)
        edited = {"vendor": "Acme", "amount": 85000}

        decide(maria, payment["id"], "approve", payload=edited)
        body = decide(tom, payment["id"], "approve", payload=edited).json()

        assert body["status"] == "approved"
        assert body["decision"]["payload"] == edited
        assert body["decision"]["edited"] is True
        assert body["payload"] == payment["payload"]  # what the agent asked stays on record

    def test_approvals_of_different_payloads_do_not_add_up(self, bot, maria, tom):
        payment = self.payment(bot)
        decide(maria, payment["id"], "approve", payload={"vendor": "Acme", "amount": 1})
        body = decide(tom, payment["id"], "approve").json()
        assert body["status"] == "pending"


def test_a_payload_change_is_refused_where_the_rule_is_not_editable(maria, invoice):
    response = decide(maria, invoice["id"], "approve", payload={"invoice": "INV-1042", "pay": 1})
    assert response.status_code == 400
    assert "payload" in response.json()["errors"]


class TestClaims:
    def test_a_claimed_request_is_decided_by_the_claimant_only(self, maria, tom, invoice):
        assert maria.post(f"/api/v1/requests/{invoice['id']}/claim").json()["claimed_by"] == "maria"

        blocked = decide(tom, invoice["id"], "approve")
        assert blocked.status_code == 403
        assert "maria" in blocked.json()["detail"]

        assert decide(maria, invoice["id"], "approve").json()["status"] == "approved"

    def test_a_second_claim_is_refused_with_who_holds_it(self, maria, tom, invoice):
        maria.post(f"/api/v1/requests/{invoice['id']}/claim")
        response = tom.post(f"/api/v1/requests/{invoice['id']}/claim")
        assert response.status_code == 403
        assert "maria" in response.json()["detail"]

    def test_unclaim_frees_it_for_the_role(self, maria, tom, invoice):
        maria.post(f"/api/v1/requests/{invoice['id']}/claim")
        assert maria.post(f"/api/v1/requests/{invoice['id']}/unclaim").json()["claimed_by"] is None
        assert decide(tom, invoice["id"], "approve").json()["status"] == "approved"
        assert kinds(invoice["id"]) == ["created", "claimed", "unclaimed", "approved"]

    def test_only_the_owning_role_may_claim(self, carol, olivia, invoice):
        assert olivia.post(f"/api/v1/requests/{invoice['id']}/claim").status_code == 404


class TestAuthentication:
    def test_an_agent_key_does_not_work_on_the_reviewer_api(self, bot, invoice):
        response = decide(bot, invoice["id"], "approve")
        assert response.status_code == 401

    def test_a_reviewer_token_does_not_work_on_the_agent_api(self, maria, invoice):
        assert maria.get(f"/api/v1/requests/{invoice['id']}").status_code == 401
        response = maria.post("/api/v1/requests", {"action": "x", "summary": "y"}, format="json")
        assert response.status_code == 401
        assert response.json()["code"] in ("not_authenticated", "authentication_failed")

    def test_no_key_is_401(self, config):
        from rest_framework.test import APIClient

        response = APIClient().get("/api/v1/requests")
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"

    def test_a_wrong_key_is_401(self, agent):
        from dataclasses import replace

        forged = replace(agent, api_key=agent.api_key[:-4] + "AAAA")
        assert agent_client(forged).get("/api/v1/requests").status_code == 401
