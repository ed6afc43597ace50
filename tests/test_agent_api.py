"""An agent asks for approvals, looks them up, waits for them and withdraws them."""

from __future__ import annotations

import threading
import time

import pytest

from approvals.models import ApprovalRequest, AuditEvent
from tests.helpers import INVOICE, agent_client, decide


def test_it_routes_an_invoice_discrepancy_to_the_finance_managers(bot):
    response = bot.post("/api/v1/requests", INVOICE, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["policy"] == {
        "name": "finance-invoices",
        "version": 1,
        "rule": "invoice-discrepancy",
    }
    assert body["class"] == "internal"
    assert body["level"] == 1
    assert body["owner_role"] == "finance-manager"
    assert body["levels"] == [
        {"role": "finance-manager", "deadline": "PT30M"},
        {"role": "cfo", "deadline": "PT2H"},
    ]
    assert body["on_timeout"] == "expire"
    assert body["decision"] is None and body["ticket"] is None
    assert body["context"] == INVOICE["context"]
    assert body["due_at"].endswith("Z")


def test_the_deadline_is_the_first_levels(bot):
    body = bot.post("/api/v1/requests", INVOICE, format="json").json()
    request = ApprovalRequest.objects.get(pk=body["id"])
    assert (request.due_at - request.created_at).total_seconds() == 30 * 60


def test_policies_are_consulted_by_priority(bot):
    body = bot.post(
        "/api/v1/requests", {"action": "refund.issue", "summary": "Refund $40"}, format="json"
    ).json()
    assert body["policy"]["name"] == "customer-refunds"
    assert body["owner_role"] == "support-lead"


def test_no_matching_rule_fails_closed_and_stores_nothing(bot):
    response = bot.post("/api/v1/requests", {"action": "foo.bar", "summary": "?"}, format="json")

    assert response.status_code == 422
    assert response.json() == {
        "code": "no_policy",
        "detail": "No policy rule matches action 'foo.bar'.",
    }
    assert not ApprovalRequest.objects.exists()


def test_an_agent_may_only_request_actions_matching_its_globs(config):
    from approvals.agents import create_agent

    narrow = agent_client(create_agent("refund-bot", actions=["refund.*"]))

    assert narrow.post("/api/v1/requests", INVOICE, format="json").status_code == 403
    refund = {"action": "refund.issue", "summary": "Refund $40"}
    assert narrow.post("/api/v1/requests", refund, format="json").status_code == 201


def test_creation_writes_an_audit_event_with_the_business_context(bot, invoice):
    event = AuditEvent.objects.get(request_id=invoice["id"])
    assert event.kind == "created"
    assert event.actor == {"agent": "billing-bot"}
    assert event.role == "finance-manager" and event.level == 1
    assert (event.policy, event.policy_version, event.rule) == (
        "finance-invoices",
        1,
        "invoice-discrepancy",
    )
    assert event.action == "invoice.discrepancy"
    assert event.summary == INVOICE["summary"]
    assert event.context["vendor"] == "Acme"


class TestIdempotency:
    def test_a_replay_answers_200_with_the_same_request(self, bot):
        first = bot.post("/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        again = bot.post("/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert ApprovalRequest.objects.count() == 1

    def test_the_same_key_with_another_body_is_a_conflict(self, bot):
        bot.post("/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        other = {**INVOICE, "summary": "something else"}
        response = bot.post("/api/v1/requests", other, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_conflict"
        assert ApprovalRequest.objects.count() == 1

    def test_keys_belong_to_one_agent(self, bot, other_agent):
        bot.post("/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
        other = agent_client(other_agent)
        response = other.post(
            "/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
        )
        assert response.status_code == 201

    def test_an_overlong_key_is_refused(self, bot):
        response = bot.post(
            "/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
        )
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["errors"]


class TestReading:
    def test_an_agent_gets_its_request(self, bot, invoice):
        response = bot.get(f"/api/v1/requests/{invoice['id']}")
        assert response.status_code == 200
        assert response.json() == invoice

    def test_another_agents_request_is_not_found(self, invoice, other_agent):
        response = agent_client(other_agent).get(f"/api/v1/requests/{invoice['id']}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_the_list_shows_only_its_own_newest_first(self, bot, other_agent):
        first = bot.post("/api/v1/requests", INVOICE, format="json").json()
        second = bot.post("/api/v1/requests", INVOICE, format="json").json()
        agent_client(other_agent).post("/api/v1/requests", INVOICE, format="json")

        body = bot.get("/api/v1/requests").json()
        assert body["count"] == 2
        assert [r["id"] for r in body["results"]] == [second["id"], first["id"]]

    def test_the_list_filters_by_status_and_action(self, bot, maria):
        approved = bot.post("/api/v1/requests", INVOICE, format="json").json()
        bot.post("/api/v1/requests", {"action": "refund.issue", "summary": "r"}, format="json")
        decide(maria, approved["id"], "approve")

        pending = bot.get("/api/v1/requests?status=pending").json()["results"]
        assert [r["action"] for r in pending] == ["refund.issue"]
        by_action = bot.get("/api/v1/requests?action=invoice.discrepancy").json()["results"]
        assert [r["id"] for r in by_action] == [approved["id"]]

    def test_the_list_finds_the_request_made_with_an_idempotency_key(self, bot, other_agent):
        keyed = bot.post("/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="r81")
        bot.post("/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="r82")
        agent_client(other_agent).post(
            "/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="r83"
        )

        found = bot.get("/api/v1/requests?idempotency_key=r81").json()
        assert found["count"] == 1
        assert [r["id"] for r in found["results"]] == [keyed.json()["id"]]
        assert bot.get("/api/v1/requests?idempotency_key=r83").json()["results"] == []
        assert bot.get("/api/v1/requests?idempotency_key=nope").json()["count"] == 0
        too_long = bot.get("/api/v1/requests", {"idempotency_key": "k" * 256})
        assert too_long.status_code == 400
        assert "idempotency_key" in too_long.json()["errors"]

    def test_an_unknown_status_filter_is_a_field_error(self, bot):
        response = bot.get("/api/v1/requests?status=maybe")
        assert response.status_code == 400
        assert "status" in response.json()["errors"]


class TestCancel:
    def test_the_agent_withdraws_a_pending_request(self, bot, invoice):
        response = bot.post(f"/api/v1/requests/{invoice['id']}/cancel", {}, format="json")

        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "cancelled"
        assert body["due_at"] is None
        assert body["decision"]["outcome"] == "cancelled"
        assert body["decision"]["by"] == {"agent": "billing-bot"}
        kinds = list(
            AuditEvent.objects.filter(request_id=invoice["id"]).values_list("kind", flat=True)
        )
        assert kinds == ["created", "cancelled"]

    def test_cancelling_a_terminal_request_is_a_conflict_with_the_request(self, bot, invoice):
        bot.post(f"/api/v1/requests/{invoice['id']}/cancel", format="json")
        response = bot.post(f"/api/v1/requests/{invoice['id']}/cancel", format="json")

        assert response.status_code == 409
        assert response.json()["status"] == "cancelled"
        assert response.json()["id"] == invoice["id"]

    def test_another_agent_cannot_cancel_it(self, invoice, other_agent):
        response = agent_client(other_agent).post(f"/api/v1/requests/{invoice['id']}/cancel")
        assert response.status_code == 404
        assert ApprovalRequest.objects.get(pk=invoice["id"]).status == "pending"


@pytest.mark.django_db(transaction=True)
class TestLongPoll:
    def test_wait_answers_as_soon_as_the_request_is_decided(self, bot, invoice, maria):
        decided = threading.Timer(0.5, lambda: decide(maria, invoice["id"], "approve"))
        decided.start()
        started = time.monotonic()
        response = bot.get(f"/api/v1/requests/{invoice['id']}?wait=10")
        elapsed = time.monotonic() - started
        decided.join()

        assert response.json()["status"] == "approved"
        assert elapsed < 5

    def test_wait_gives_up_after_n_seconds_with_the_pending_request(self, bot, invoice):
        started = time.monotonic()
        response = bot.get(f"/api/v1/requests/{invoice['id']}?wait=1")
        assert response.json()["status"] == "pending"
        assert 1 <= time.monotonic() - started < 3

    @pytest.mark.parametrize("wait", ["0", "61", "soon"])
    def test_wait_must_be_between_1_and_60(self, bot, invoice, wait):
        response = bot.get(f"/api/v1/requests/{invoice['id']}?wait={wait}")
        assert response.status_code == 400
        assert "wait" in response.json()["errors"]
