"""Routing: which policy version and rule own a request.

Policies are consulted by priority (then name, so ties are deterministic),
rules in their order; the first rule whose globs and condition match wins.
Routing fails closed: when a rule's globs match but its condition cannot be
evaluated on the request's data, routing stops there with ConditionFailed and
never falls through to a later rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from django.db import connection

from policies.conditions import Activation, EvaluationError, evaluate
from policies.models import Policy, PolicyVersion
from policies.spec import RuleSpec


@dataclass(frozen=True)
class Route:
    version: PolicyVersion
    rule: RuleSpec

    @property
    def policy_name(self) -> str:
        return self.version.policy.name


class ConditionFailed(Exception):
    """A matching rule's condition could not be evaluated on the request."""

    def __init__(self, version: PolicyVersion, rule: dict, error: str):
        self.policy = version.policy
        self.policy_name, self.version_number = version.policy.name, version.number
        self.rule_name, self.error = rule["name"], error
        super().__init__(
            f"The condition of rule '{self.rule_name}' in policy '{self.policy_name}' "
            f"(version {self.version_number}) could not be evaluated on this request: {error}. "
            "Routing stops here rather than fall through to a later rule."
        )


def route(
    *, action: str, context: dict, payload: dict, agent: str, requester: dict
) -> Route | None:
    activation = Activation(
        {
            "action": action,
            "context": context,
            "payload": payload,
            "agent": {"name": agent},
            "requester": requester,
        }
    )
    for version in current_versions():
        for rule in version.spec["rules"]:
            where = f"{version.policy.name} v{version.number}"
            try:
                if matches(rule, activation, where=where):
                    return Route(version=version, rule=rule)
            except EvaluationError as exc:
                raise ConditionFailed(version, rule, str(exc)) from None
    return None


# Versions never change once written, so each process keeps the ones it has
# loaded: routing then costs one small query (which versions are current) and
# no JSON decoding of specs. The key includes the policy and number because
# SQLite may hand a rolled-back row's id to a later row.
_versions: dict[tuple[int, int, int], PolicyVersion] = {}
_CURRENT_SQL = f"""
    SELECT p.current_version_id, p.id, v.number
    FROM {Policy._meta.db_table} p
    JOIN {PolicyVersion._meta.db_table} v ON v.id = p.current_version_id
    ORDER BY p.priority, p.name
"""


def current_versions() -> list[PolicyVersion]:
    """The current version of every policy, in the order they are consulted."""
    # A plain query: on the request path the ORM's own overhead would cost
    # more than the database round trip.
    with connection.cursor() as cursor:
        cursor.execute(_CURRENT_SQL)
        current = [tuple(row) for row in cursor.fetchall()]
    missing = [key[0] for key in current if key not in _versions]
    if missing:
        for version in PolicyVersion.objects.filter(pk__in=missing).select_related("policy"):
            _versions[version.pk, version.policy_id, version.number] = version
    return [_versions[key] for key in current]


def matches(rule: dict, activation: Activation, *, where: str) -> bool:
    action = activation.variables["action"]
    if not any(fnmatchcase(action, glob) for glob in rule["actions"]):
        return False
    if rule["when"] is None:
        return True
    return evaluate(
        rule["when"], activation, where=f"rule '{rule['name']}' of {where} for action {action!r}"
    )
