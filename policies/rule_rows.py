"""Between a policy's spec and the Rule rows the admin edits: ``rows_from_spec``
one way, ``raw_rule`` (the document form, which ``validate_rule`` makes a spec
of) the other."""

from __future__ import annotations

from typing import Any

from policies.durations import format_duration
from policies.models import Policy, Rule
from policies.spec import OnTimeout, PolicySpec


def rows_from_spec(policy: Policy, spec: PolicySpec) -> None:
    """Rewrite the policy's Rule rows to show ``spec``."""
    Rule.objects.filter(policy=policy).delete()
    Rule.objects.bulk_create(
        Rule(
            policy=policy,
            position=position,
            name=rule["name"],
            actions=", ".join(rule["actions"]),
            when=rule["when"] or "",
            action_class=rule["class"],
            levels="\n".join(
                f"{level['role']} {format_duration(level['deadline'])}" for level in rule["levels"]
            ),
            on_timeout=rule["on_timeout"],
            fail_open=rule["fail_open"],
            ticket=rule["ticket"],
            approvals=rule["approvals"],
            editable=rule["editable"],
            remind=format_duration(rule["remind"]) if rule["remind"] else "",
            calendar=rule.get("calendar") or "",
        )
        for position, rule in enumerate(spec["rules"])
    )


def raw_rule(data: dict[str, Any]) -> dict[str, Any]:
    """A rule as the YAML would say it, from a Rule form's cleaned data."""
    raw: dict[str, Any] = {
        "name": data.get("name"),
        "actions": [
            glob.strip() for glob in (data.get("actions") or "").split(",") if glob.strip()
        ],
        "class": data.get("action_class"),
        "levels": _levels(data.get("levels") or ""),
        "on_timeout": data.get("on_timeout") or OnTimeout.EXPIRE.value,
        "fail_open": bool(data.get("fail_open")),
        "ticket": bool(data.get("ticket")),
        "approvals": data.get("approvals") or 1,
        "editable": bool(data.get("editable")),
    }
    if (data.get("when") or "").strip():
        raw["when"] = data["when"].strip()
    if (data.get("remind") or "").strip():
        raw["remind"] = data["remind"].strip()
    if (data.get("calendar") or "").strip():
        raw["calendar"] = data["calendar"].strip()
    return raw


def _levels(text: str) -> list[dict[str, Any]]:
    levels = []
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if not parts:
            continue
        levels.append({"role": parts[0], "deadline": parts[1] if len(parts) > 1 else None})
    return levels
