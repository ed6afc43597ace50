"""What would happen to a request, without storing anything."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from policies.business_hours import Calendar
from policies.config import current_catalog
from policies.durations import iso_duration, iso_instant
from policies.matching import ConditionFailed, route
from policies.models import AnyUser, Policy, rule_clock
from policies.spec import OnTimeout, Report, lint_facts, lint_rule


def may_view(user: AnyUser, policy: Policy) -> bool:
    """Superusers, and staff holding view or change on the policy (or on all)."""
    if user.is_active and user.is_superuser:
        return True
    perms = ("policies.view_policy", "policies.change_policy")
    return any(user.has_perm(perm) or user.has_perm(perm, policy) for perm in perms)


def simulate(
    body: dict[str, Any],
    *,
    agent: str = "",
    now: datetime | None = None,
    viewer: AnyUser | None = None,
) -> dict:
    """Which policy, version and rule would route ``body`` (a request as the
    agent API takes it), each level's owner and projected deadline, the
    terminal outcome if nobody decides, and the warnings.

    For a ``viewer`` who may not view the policy that routes it, only that a
    policy they cannot see takes it: its rules, roles and timeouts stay hidden.
    """
    now = now or timezone.now()
    action = body.get("action", "")
    try:
        found = route(
            action=action,
            context=body.get("context") or {},
            payload=body.get("payload") or {},
            agent=agent,
            requester=body.get("requester") or {},
        )
    except ConditionFailed as exc:
        if viewer is not None and not may_view(viewer, exc.policy):
            return {
                "matched": False,
                "hidden": True,
                "policy": None,
                "levels": [],
                "outcome": None,
                "error": {"code": "condition_error", "detail": "", "error": ""},
                "warnings": [
                    "A policy you may not view would refuse this request (422 "
                    "condition_error): its condition cannot be evaluated on this data."
                ],
            }
        return {
            "matched": False,
            "policy": {
                "name": exc.policy_name,
                "version": exc.version_number,
                "rule": exc.rule_name,
            },
            "levels": [],
            "outcome": None,
            "error": {"code": "condition_error", "detail": str(exc), "error": exc.error},
            "warnings": [
                f"{exc} A real request would be refused with 422 condition_error, "
                "and nothing would be stored."
            ],
        }
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
    if viewer is not None and not may_view(viewer, found.version.policy):
        return {
            "matched": True,
            "hidden": True,
            "policy": None,
            "levels": [],
            "outcome": None,
            "warnings": [
                "A policy you may not view routes this request; its owners or a superuser "
                "can tell you more."
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
                "due_at": iso_instant(due),
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
            "status": OnTimeout(rule["on_timeout"]).status,
            "at": iso_instant(due),
            "ticket_for": rule["levels"][-1]["role"] if rule["ticket"] else None,
        },
        "warnings": lint_rule(rule, where, facts.members, facts),
    }
    if calendar is not None:
        result["calendar"] = calendar.name  # the deadlines above count its open hours
    return result
