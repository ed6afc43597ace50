"""Exactly-once under real concurrency: threads against real PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from guardian.shortcuts import assign_perm

from approvals.models import ApprovalRequest, AuditEvent
from policies.models import Role
from tests.helpers import INVOICE, agent_client, decide, reviewer_client

pytestmark = pytest.mark.django_db(transaction=True)

REVIEWERS = 50


@pytest.fixture
def finance_team(config):
    role = Role.objects.get(name="finance-manager")
    team = []
    for n in range(REVIEWERS):
        user = get_user_model().objects.create_user(f"reviewer{n}")
        assign_perm("policies.act_for_role", user, role)
        team.append(reviewer_client(user))
    return team


def test_50_conflicting_decisions_leave_one_outcome_and_one_event(bot, finance_team):
    request_id = bot.post("/api/v1/requests", INVOICE, format="json").json()["id"]
    start = Barrier(REVIEWERS)

    def attempt(n: int):
        client = finance_team[n]
        outcome = "approve" if n % 2 else "deny"
        start.wait()
        try:
            response = decide(client, request_id, outcome, reason=f"reviewer{n} says {outcome}")
            return outcome, response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(REVIEWERS) as pool:
        results = list(pool.map(attempt, range(REVIEWERS)))

    final = ApprovalRequest.objects.get(pk=request_id)
    assert final.status in ("approved", "denied")
    decisions = AuditEvent.objects.filter(request_id=request_id, kind__in=["approved", "denied"])
    assert decisions.count() == 1
    winner = final.decided_by["user"]
    for outcome, status_code, body in results:
        # Everyone sees the winner's state: 200 if they agreed, 409 if not.
        agreed = {"approve": "approved", "deny": "denied"}[outcome] == final.status
        assert status_code == (200 if agreed else 409)
        assert body["status"] == final.status
        assert body["decision"]["by"]["user"] == winner


def test_concurrent_creates_with_one_idempotency_key_store_one_request(agent):
    start = Barrier(8)

    def create(_):
        client = agent_client(agent)
        start.wait()
        try:
            response = client.post(
                "/api/v1/requests", INVOICE, format="json", HTTP_IDEMPOTENCY_KEY="same"
            )
            return response.status_code, response.json()["id"]
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))

    assert sorted(code for code, _ in results) == [200] * 7 + [201]
    assert len({request_id for _, request_id in results}) == 1
    assert ApprovalRequest.objects.count() == 1


def test_a_claim_that_loses_to_an_escalation_is_judged_against_the_escalated_request(
    bot, maria, monkeypatch
):
    """The claim read the request at level 1; the escalation commits before
    the claim's conditional UPDATE runs: the claim updates nothing, reads the
    request again, and gets what a claim on the escalated request gets."""
    from threading import Thread

    from approvals import actions, escalation, transitions

    request_id = bot.post("/api/v1/requests", INVOICE, format="json").json()["id"]
    real, raced = transitions.transition, []

    def escalate_elsewhere() -> None:
        try:
            request = ApprovalRequest.objects.get(pk=request_id)
            assert escalation.escalate(request)
        finally:
            connection.close()

    def transition_after_an_escalation(request, **kwargs):
        if not raced:  # the claim's first attempt, between its read and its UPDATE
            raced.append(True)
            thread = Thread(target=escalate_elsewhere)
            thread.start()
            thread.join(timeout=30)
        return real(request, **kwargs)

    monkeypatch.setattr(actions, "transition", transition_after_an_escalation)
    response = maria.post(f"/api/v1/requests/{request_id}/claim")

    assert raced
    assert response.status_code == 403
    assert "cfo" in response.json()["detail"]
    request = ApprovalRequest.objects.get(pk=request_id)
    assert (request.level, request.claimed_by_id) == (2, None)
    kinds = AuditEvent.objects.filter(request_id=request_id).order_by("seq")
    assert list(kinds.values_list("kind", flat=True)) == ["created", "escalated"]
