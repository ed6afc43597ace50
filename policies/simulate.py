"""What would happen to a request, without storing anything."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from policies.business_hours import Calendar
from policies.config import current_catalog
from policies.durations import iso_duration
from policies.matching import route
from policies.models import rule_clock
from policies.spec import Report, lint_facts, lint_rule

TERMINAL = {"expire": "expired", "deny": "denied", "approve": "approved"}


def simulate(body: dict[str, Any], *, agent: str = "", now: datetime | None = None) -> dict:
    """Which policy, version and rule would route ``body`` (a request as the
    agent API takes it), each level's owner and projected deadline, the
    terminal outcome if nobody decides, and the warnings."""
    now = now or timezone.now()
    action = body.get("action", "")
    found = route(
        action=action,
        context=body.get("context") or {},
        payload=body.get("payload") or {},
        agent=agent,
        requester=body.get("requester") or {},
    )
    if found is None:
        return {
            "matched": False,
            "policy": None,
            "levels": [],
            "outcome": None,
            "warnings": [
                f"No policy rule matches action {action!r}: a real request would be "
                "refused with 422 no_policy."
            ],
        }
    rule = found.rule
    calendar_row, _ = rule_clock(rule)
    calendar = Calendar.from_spec(calendar_row.as_spec()) if calendar_row else None
    levels, due = [], now
    for number, level in enumerate(rule["levels"], start=1):
        # Under a calendar, each level counts open hours from the previous one's end.
        if calendar is None:
            due = due + timedelta(seconds=level["deadline"])
        else:
            due = calendar.add(due, level["deadline"])
        levels.append(
            {
                "level": number,
                "role": level["role"],
                "deadline": iso_duration(level["deadline"]),
                "due_at": due.isoformat().replace("+00:00", "Z"),
            }
        )
    facts = lint_facts(Report(), current_catalog([]))
    where = f"policy '{found.policy_name}', rule '{rule['name']}'"
    result = {
        "matched": True,
        "policy": {
            "name": found.policy_name,
            "version": found.version.number,
            "rule": rule["name"],
        },
        "class": rule["class"],
        "approvals": rule["approvals"],
        "levels": levels,
        "outcome": {
            "on_timeout": rule["on_timeout"],
            "status": TERMINAL[rule["on_timeout"]],
            "at": due.isoformat().replace("+00:00", "Z"),
            "ticket_for": rule["levels"][-1]["role"] if rule["ticket"] else None,
        },
        "warnings": lint_rule(rule, where, facts.members, facts),
    }
    if calendar is not None:
        result["calendar"] = calendar.name  # the deadlines above count its open hours
    return result
