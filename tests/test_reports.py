"""The SLA dashboard: figures against hand-computed ones on a small story,
what each staff member may see, CSV downloads and the trend chart."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals import escalation
from approvals.reports import Scope, build
from policies.config import apply_documents, load_yaml
from policies.models import Policy
from tests.helpers import INVOICE, decide

SLOW_REFUNDS = """
kind: Policy
name: customer-refunds
priority: 10
rules:
  - name: refund-review
    actions: ["refund.*"]
    class: customer-urgent
    levels:
      - {role: support-lead, deadline: 30m}
    on_timeout: deny
"""
REFUND = {"action": "refund.issue", "summary": "Refund order A-9", "context": {"order": "A-9"}}


@pytest.fixture
def story(bot, maria, carol, sam):
    """Six requests raised at once. Refunds (customer-urgent, SLA 15m, deadline 30m): sam
    approves one at 5m, denies one at 20m (late), the third times out.
    Invoices (internal, SLA 2h): maria approves one at 10m, the CFO approves
    an escalated one at 40m, the third waits with the CFO."""
    # A 30-minute deadline on a 15-minute SLA, so that a person can decide
    # after the SLA: at the deadline the engine acts first.
    apply_documents(load_yaml(SLOW_REFUNDS), author="tests")
    start = timezone.now().replace(hour=8, minute=0, second=0, microsecond=0)
    with time_machine.travel(start, tick=False) as clock:

        def create(body):
            return bot.post("/api/v1/requests", body, format="json").json()["id"]

        r1, r2, _r3 = (create({**REFUND, "summary": f"refund {n}"}) for n in range(3))
        i1, i2, _i3 = (create({**INVOICE, "summary": f"invoice {n}"}) for n in range(3))
        clock.move_to(start + timedelta(minutes=5))
        assert decide(sam, r1, "approve").status_code == 200
        clock.move_to(start + timedelta(minutes=10))
        assert decide(maria, i1, "approve").status_code == 200
        clock.move_to(start + timedelta(minutes=20))
        assert decide(sam, r2, "deny", reason="fraud").status_code == 200
        clock.move_to(start + timedelta(minutes=31))
        swept = escalation.sweep()
        assert (swept.escalated, swept.finished) == (2, 1)
        clock.move_to(start + timedelta(minutes=40))
        assert decide(carol, i2, "approve").status_code == 200
    return start + timedelta(hours=2, minutes=10)


def test_the_figures_match_the_hand_computed_ones(story):
    report = build(Scope(None, None), story.date(), story.date(), now=story)
    urgent, internal = report.classes
    assert urgent.name == "customer-urgent"
    assert (urgent.ended, urgent.met, urgent.missed, urgent.late) == (3, 1, 2, 1)
    assert urgent.within_sla == pytest.approx(1 / 3)
    assert (urgent.p50, urgent.p90) == (300, 1800)  # 5m and 20m decisions
    assert (urgent.escalation_rate, urgent.expiry_rate) == (0, pytest.approx(1 / 3))

    assert (internal.ended, internal.met, internal.late) == (2, 2, 0)
    assert internal.within_sla == 1
    assert (internal.p50, internal.p90) == (600, 2700)  # 10m and 40m decisions
    assert (internal.escalation_rate, internal.expiry_rate) == (0.5, 0)

    roles = {row.name: row for row in report.roles}
    assert (roles["cfo"].open, roles["cfo"].overdue, roles["cfo"].median) == (1, 1, 2700)
    assert (roles["finance-manager"].open, roles["finance-manager"].median) == (0, 600)
    assert (roles["support-lead"].decided, roles["support-lead"].median) == (2, 300)
    [today] = report.days
    assert (today.ended, today.met, today.missed) == (5, 3, 2)


@pytest.fixture
def finance_admin(users):
    """Staff who may view the refunds policy only."""
    user = get_user_model().objects.create_user("fin", "fin@example.com", "pw", is_staff=True)
    assign_perm("policies.view_policy", user, Policy.objects.get(name="customer-refunds"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser_client(users):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_the_page_shows_both_tables_and_the_chart(story, superuser_client):
    with time_machine.travel(story, tick=False):
        page = superuser_client.get("/reports/").content.decode()
    assert "customer-urgent" in page and "internal" in page and "cfo" in page
    assert "33.3%" in page and "≤ 45m" in page
    assert "<svg" in page and "<rect" in page and "<polyline" in page


def test_each_staff_member_sees_only_the_classes_and_roles_they_may_view(story, finance_admin):
    with time_machine.travel(story, tick=False):
        page = finance_admin.get("/reports/").content.decode()
    assert "customer-urgent" in page and "support-lead" in page
    assert "internal" not in page and "cfo" not in page


def test_reviewers_who_are_not_staff_are_sent_to_log_in(story, users):
    client = Client()
    client.force_login(users["maria"])
    assert client.get("/reports/").status_code == 302


def test_each_table_downloads_as_csv(story, superuser_client):
    day = story.date().isoformat()
    with time_machine.travel(story, tick=False):
        response = superuser_client.get(
            "/reports/", {"since": day, "until": day, "download": "classes"}
        )
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["class"] for row in rows] == ["customer-urgent", "internal"]
    assert rows[0]["within SLA"] == "33.3%" and rows[1]["p90"] == "≤ 45m"
    with time_machine.travel(story, tick=False):
        roles = superuser_client.get("/reports/", {"download": "roles"}).content.decode()
    assert "cfo,1,1,1,≤ 45m" in roles
    with time_machine.travel(story, tick=False):
        trend = superuser_client.get("/reports/", {"download": "trend"}).content.decode()
    assert f"{day},5,60.0%" in trend


def test_a_bad_period_falls_back_instead_of_failing(story, superuser_client):
    response = superuser_client.get("/reports/", {"since": "yesterday", "until": "1999-01-01"})
    assert response.status_code == 200
