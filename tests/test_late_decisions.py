"""Deadlines mean what they say: a decision after its level's deadline lets the
engine's step happen first, and is judged against the state it leaves."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest, AuditEvent
from tests.helpers import after, decide

REFUND = {"action": "refund.issue", "summary": "Refund order 4411", "context": {"amount": 80}}


@pytest.fixture
def refund(bot, clock) -> dict:
    """A pending refund: support-lead alone, 15 minutes, then denied on timeout."""
    response = bot.post("/api/v1/requests", REFUND, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def kinds(request_id: str) -> list[str]:
    events = AuditEvent.objects.filter(request_id=request_id).order_by("seq")
    return list(events.values_list("kind", flat=True))


def test_a_decision_just_after_the_level_deadline_finds_it_escalated(clock, maria, invoice):
    after(clock, minutes=30, seconds=1)  # the engine has not run yet

    response = decide(maria, invoice["id"], "approve")

    assert response.status_code == 403
    assert "cfo" in response.json()["detail"]
    request = ApprovalRequest.objects.get(pk=invoice["id"])
    assert (request.status, request.level, request.owner_role.name) == ("pending", 2, "cfo")
    assert kinds(invoice["id"]) == ["created", "escalated"]


def test_the_next_level_decides_at_once_after_the_deadline(clock, carol, invoice):
    after(clock, minutes=31)

    response = decide(carol, invoice["id"], "approve")

    assert response.status_code == 200
    assert response.json()["decision"]["by"] == {"user": "carol", "role": "cfo"}


def test_a_deny_after_the_last_deadline_is_late_even_when_the_timeout_also_denies(
    clock, sam, refund
):
    after(clock, minutes=15, seconds=1)  # before the engine acted

    response = decide(sam, refund["id"], "deny", reason="customer abuses refunds")

    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "denied" and body["decision"]["by"] == {"system": "timeout"}
    assert kinds(refund["id"]) == ["created", "denied", "late_decision"]
    late = AuditEvent.objects.get(request_id=refund["id"], kind="late_decision")
    assert late.data["outcome"] == "deny" and late.data["status"] == "denied"


def test_a_repeat_of_the_timeout_outcome_after_the_engine_acted_is_late_too(clock, sam, refund):
    from approvals import escalation

    after(clock, minutes=16)
    escalation.sweep()

    response = decide(sam, refund["id"], "deny", reason="no")

    assert response.status_code == 409
    assert kinds(refund["id"]) == ["created", "denied", "late_decision"]


def test_an_approve_after_the_final_deadline_is_refused_and_recorded(clock, carol, invoice):
    after(clock, minutes=31)
    from approvals import escalation

    escalation.sweep()  # level 2 now, due in 2 h
    after(clock, hours=2, seconds=1)  # the engine has not run again

    response = decide(carol, invoice["id"], "approve")

    assert response.status_code == 409
    assert response.json()["status"] == "expired"
    assert response.json()["ticket"]["status"] == "open"
    assert kinds(invoice["id"]) == [
        "created", "escalated", "expired", "ticket_opened", "late_decision"
    ]  # fmt: skip


def test_a_claim_after_the_deadline_finds_it_escalated(clock, maria, invoice):
    after(clock, minutes=30, seconds=1)

    response = maria.post(f"/api/v1/requests/{invoice['id']}/claim")

    assert response.status_code == 403
    assert ApprovalRequest.objects.get(pk=invoice["id"]).level == 2


def test_a_cancel_after_the_last_deadline_finds_it_ended(clock, bot, refund):
    after(clock, minutes=15, seconds=1)

    response = bot.post(f"/api/v1/requests/{refund['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["status"] == "denied"
