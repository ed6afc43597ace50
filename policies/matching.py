"""Routing: which policy version and rule own a request.

Policies are consulted by priority (then name, so ties are deterministic),
rules in their order; the first rule whose globs and condition match wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from policies.conditions import evaluate
from policies.models import Policy, PolicyVersion


@dataclass(frozen=True)
class Route:
    version: PolicyVersion
    rule: dict

    @property
    def policy_name(self) -> str:
        return self.version.policy.name


def route(
    *, action: str, context: dict, payload: dict, agent: str, requester: dict
) -> Route | None:
    activation = {
        "action": action,
        "context": context,
        "payload": payload,
        "agent": {"name": agent},
        "requester": requester,
    }
    policies = (
        Policy.objects.filter(current_version__isnull=False)
        .select_related("current_version__policy")
        .order_by("priority", "name")
    )
    for policy in policies:
        version = policy.current_version
        for rule in version.spec["rules"]:
            if matches(rule, activation, where=f"{policy.name} v{version.number}"):
                return Route(version=version, rule=rule)
    return None


def matches(rule: dict, activation: dict, *, where: str) -> bool:
    action = activation["action"]
    if not any(fnmatchcase(action, glob) for glob in rule["actions"]):
        return False
    if rule["when"] is None:
        return True
    return evaluate(
        rule["when"], activation, where=f"rule '{rule['name']}' of {where} for action {action!r}"
    )
