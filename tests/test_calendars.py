"""Business-hours calendars end to end: YAML and the admin, deadlines that
pause overnight, over weekends, holidays and a DST change, requests that pin
their calendar, simulation, the inbox, and the SLA verdict of each decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.utils.dateparse import parse_datetime

from approvals import escalation
from approvals.models import ApprovalRequest, DecisionStat
from policies.config import ConfigError, apply_documents, dump_yaml, export_documents, load_yaml
from policies.models import ActionClass, Calendar
from policies.simulate import simulate
from tests.helpers import INVOICE, decide

BERLIN = ZoneInfo("Europe/Berlin")

OFFICE = """
kind: Calendar
name: eu-office
title: Berlin office
timezone: Europe/Berlin
hours: {mon-fri: "09:00-17:30"}
holidays: ["2026-12-24", "2026-12-25"]
---
kind: ActionClass
name: internal
sla: 2h
calendar: eu-office
"""


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


@pytest.fixture
def office(config):
    return apply_documents(load_yaml(OFFICE), author="tests")


def raise_invoice(bot, at: datetime) -> ApprovalRequest:
    with time_machine.travel(at, tick=False):
        response = bot.post("/api/v1/requests", INVOICE, format="json")
    assert response.status_code == 201, response.content
    return ApprovalRequest.objects.get(pk=response.json()["id"])


def sweep_at(at: datetime):
    with time_machine.travel(at, tick=False):
        return escalation.sweep()


# --- configuration --------------------------------------------------------------


def test_a_calendar_is_applied_and_referred_to_by_a_class(office):
    calendar = Calendar.objects.get(name="eu-office")
    assert calendar.timezone == "Europe/Berlin"
    assert calendar.hours["mon"] == ["09:00-17:30"] and "sat" not in calendar.hours
    assert calendar.holidays == ["2026-12-24", "2026-12-25"]
    assert ActionClass.objects.get(name="internal").calendar == calendar
    assert "create calendar eu-office" in office.changes


def test_export_then_apply_changes_nothing(office):
    exported = dump_yaml(export_documents())
    assert "mon-fri: 09:00-17:30" in exported
    again = apply_documents(load_yaml(exported), author="tests")
    assert again.changes == []


def test_a_dry_run_shows_the_calendar_and_writes_nothing(config, tmp_path, capsys):
    path = tmp_path / "office.yaml"
    path.write_text(OFFICE)
    call_command("apply", "-f", str(path), "--dry-run")
    assert "create calendar eu-office" in capsys.readouterr().out
    assert not Calendar.objects.exists()


def test_an_unknown_calendar_is_an_error(config):
    bad = OFFICE.replace("calendar: eu-office", "calendar: us-office")
    with pytest.raises(ConfigError) as error:
        apply_documents(load_yaml(bad), author="tests")
    assert "unknown calendar 'us-office'" in str(error.value)
    assert not Calendar.objects.exists()


def test_a_bad_time_zone_is_an_error(config):
    with pytest.raises(ConfigError) as error:
        apply_documents(load_yaml(OFFICE.replace("Europe/Berlin", "Europe/Atlantis")), author="t")
    assert "not an IANA time zone" in str(error.value)


def test_a_rule_names_its_own_calendar_and_it_wins(office):
    night_desk = """
kind: Calendar
name: night-desk
timezone: UTC
hours: {mon-sun: "00:00-24:00"}
---
kind: Policy
name: finance-invoices
priority: 100
rules:
  - name: invoice-discrepancy
    actions: ["invoice.discrepancy"]
    class: internal
    calendar: night-desk
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
"""
    apply_documents(load_yaml(night_desk), author="tests")
    result = simulate(INVOICE, now=berlin(2026, 11, 27, 22, 0))
    assert result["calendar"] == "night-desk"
    assert parse_datetime(result["levels"][0]["due_at"]) == berlin(2026, 11, 27, 22, 30)
    exported = dump_yaml(export_documents())
    assert "calendar: night-desk" in exported
    assert apply_documents(load_yaml(exported), author="tests").changes == []


def test_the_admin_edits_open_hours_as_text(root, office):
    calendar = Calendar.objects.get(name="eu-office")
    response = root.post(
        f"/admin/policies/calendar/{calendar.pk}/change/",
        {
            "name": "eu-office",
            "title": "Berlin office",
            "timezone": "Europe/Berlin",
            "hours_text": "mon-thu: 09:00-12:00, 13:00-17:30\nfri: 09:00-15:00",
            "holidays_text": "2026-12-24\n2026-12-31",
        },
    )
    assert response.status_code == 302, response.content
    calendar.refresh_from_db()
    assert calendar.hours["tue"] == ["09:00-12:00", "13:00-17:30"]
    assert calendar.hours["fri"] == ["09:00-15:00"]
    assert calendar.holidays == ["2026-12-24", "2026-12-31"]


def test_the_admin_refuses_overlapping_ranges(root, office):
    calendar = Calendar.objects.get(name="eu-office")
    response = root.post(
        f"/admin/policies/calendar/{calendar.pk}/change/",
        {
            "name": "eu-office",
            "timezone": "Europe/Berlin",
            "hours_text": "mon: 09:00-12:00, 11:00-13:00",
        },
    )
    assert response.status_code == 200
    assert b"overlap" in response.content
    calendar.refresh_from_db()
    assert calendar.hours["mon"] == ["09:00-17:30"]


# --- deadlines under a calendar (time machine) ---------------------------------------


def test_a_deadline_raised_on_friday_afternoon_falls_due_on_monday(office, bot):
    # 30 min for the finance managers: Friday 17:15 leaves 15 minutes, then Monday.
    request = raise_invoice(bot, berlin(2026, 11, 27, 17, 15))
    assert request.due_at == berlin(2026, 11, 30, 9, 15)
    assert request.calendar["name"] == "eu-office"

    assert sweep_at(berlin(2026, 11, 28, 12, 0)).escalated == 0  # Saturday: nothing moves
    assert sweep_at(berlin(2026, 11, 30, 9, 14)).escalated == 0
    assert sweep_at(berlin(2026, 11, 30, 9, 16)).escalated == 1

    request.refresh_from_db()
    # The CFO's 2h count from the escalation, in open hours too.
    assert (request.owner_role.name, request.due_at) == ("cfo", berlin(2026, 11, 30, 11, 16))


def test_holidays_pause_the_clock(office, bot):
    request = raise_invoice(bot, berlin(2026, 12, 23, 17, 20))
    # 10 minutes on Wednesday; Thursday and Friday are holidays; 20 on Monday.
    assert request.due_at == berlin(2026, 12, 28, 9, 20)
    assert sweep_at(berlin(2026, 12, 24, 12, 0)).escalated == 0


def test_office_hours_hold_across_the_dst_change(office, bot):
    # Clocks go back on Sunday 25 October: Monday 09:00 is 08:00 UTC, not 07:00.
    request = raise_invoice(bot, berlin(2026, 10, 23, 17, 20))
    assert request.due_at == datetime(2026, 10, 26, 8, 20, tzinfo=UTC)
    assert sweep_at(datetime(2026, 10, 26, 7, 30, tzinfo=UTC)).escalated == 0
    assert sweep_at(datetime(2026, 10, 26, 8, 21, tzinfo=UTC)).escalated == 1


def test_a_request_keeps_its_calendar_when_the_calendar_is_edited(office, bot):
    request = raise_invoice(bot, berlin(2026, 11, 27, 17, 15))
    Calendar.objects.filter(name="eu-office").update(hours={"sat": ["00:00-24:00"]})

    assert sweep_at(berlin(2026, 11, 28, 12, 0)).escalated == 0
    assert sweep_at(berlin(2026, 11, 30, 9, 16)).escalated == 1
    request.refresh_from_db()
    assert request.due_at == berlin(2026, 11, 30, 11, 16)


def test_reminders_count_open_hours_too(config, bot, users):
    apply_documents(load_yaml(OFFICE), author="tests")
    apply_documents(
        load_yaml(
            """
kind: Policy
name: finance-invoices
priority: 100
rules:
  - name: invoice-discrepancy
    actions: ["invoice.discrepancy"]
    class: internal
    remind: 10m
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
"""
        ),
        author="tests",
    )
    request = raise_invoice(bot, berlin(2026, 11, 27, 17, 15))
    # 10 open minutes before Monday 09:15 is Monday 09:05, not Monday 09:05 minus a weekend.
    assert request.remind_at == berlin(2026, 11, 30, 9, 5)
    assert sweep_at(berlin(2026, 11, 30, 9, 4)).reminded == 0
    assert sweep_at(berlin(2026, 11, 30, 9, 6)).reminded == 1


def test_simulation_projects_deadlines_in_open_hours(office):
    result = simulate(INVOICE, now=berlin(2026, 11, 27, 17, 15))
    assert result["calendar"] == "eu-office"
    first, second = (parse_datetime(level["due_at"]) for level in result["levels"])
    assert first == berlin(2026, 11, 30, 9, 15)
    assert second == berlin(2026, 11, 30, 11, 15)


def test_the_inbox_says_when_a_paused_deadline_resumes(office, bot, users, client):
    raise_invoice(bot, berlin(2026, 11, 27, 17, 15))
    client.force_login(users["maria"])
    with time_machine.travel(berlin(2026, 11, 28, 10, 0), tick=False):
        page = client.get("/").content.decode()
    assert "paused, resumes Monday 09:00 CET" in page
    with time_machine.travel(berlin(2026, 11, 30, 9, 5), tick=False):
        page = client.get("/").content.decode()
    assert "paused, resumes" not in page


# --- the SLA verdict of each decision ------------------------------------------------


def test_a_decision_within_the_sla_in_open_hours_meets_it(office, bot, maria):
    # Raised Friday 17:10, decided Monday 09:05 (the level's 30 open minutes end
    # at 09:10): 20 + 5 open minutes, well within the 2h SLA.
    request = raise_invoice(bot, berlin(2026, 11, 27, 17, 10))
    with time_machine.travel(berlin(2026, 11, 30, 9, 5), tick=False):
        assert decide(maria, str(request.pk), "deny", reason="duplicate").status_code == 200
    request.refresh_from_db()
    assert (request.decision_seconds, request.sla_met) == (1500, True)
    stat = DecisionStat.objects.get()
    assert (stat.action_class, stat.role, stat.outcome, stat.sla) == (
        "internal", "finance-manager", "denied", "met",
    )  # fmt: skip


def test_a_decision_after_the_sla_misses_it(office, bot, carol):
    request = raise_invoice(bot, berlin(2026, 11, 30, 9, 0))
    sweep_at(berlin(2026, 11, 30, 9, 31))
    with time_machine.travel(berlin(2026, 11, 30, 11, 30), tick=False):
        assert decide(carol, str(request.pk), "approve").status_code == 200
    request.refresh_from_db()
    assert (request.decision_seconds, request.sla_met) == (9000, False)
    assert DecisionStat.objects.get().escalated is True


def test_a_timeout_misses_the_sla(office, bot):
    request = raise_invoice(bot, berlin(2026, 11, 30, 9, 0))
    sweep_at(berlin(2026, 11, 30, 9, 31))
    sweep_at(berlin(2026, 11, 30, 11, 32))
    request.refresh_from_db()
    assert (request.status, request.sla_met) == ("expired", False)
    assert (DecisionStat.objects.get().outcome, DecisionStat.objects.get().timed_out) == (
        "expired",
        True,
    )


def test_without_a_calendar_the_sla_counts_wall_clock_time(config, bot, maria):
    request = raise_invoice(bot, datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 11, 28, 12, 10, tzinfo=UTC), tick=False):
        decide(maria, str(request.pk), "approve")
    request.refresh_from_db()
    assert (request.decision_seconds, request.sla_met) == (600, True)
    assert request.sla_due_at == request.created_at + timedelta(hours=2)
