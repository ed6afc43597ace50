"""Validation of configuration documents: the one piece of code that serves
``apply``, the admin and the API.

It turns raw documents (parsed YAML or JSON) into normalized ones and collects
every error and warning, each naming the document, the rule and the level it
is about, and what to change. It touches no database: callers describe what
already exists in a ``Catalog``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import pairwise
from typing import Any, NotRequired, TypedDict

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models

from policies.business_hours import normalize as normalize_calendar
from policies.conditions import ConditionError, check_condition
from policies.durations import DurationError, format_duration, parse_duration

SLUG = re.compile(r"^[a-z0-9-]{1,63}$")
GLOB = re.compile(r"^[a-z0-9_.:*?\[\]!-]{1,100}$")
DAY = 24 * 3600


class OnTimeout(models.TextChoices):
    """What happens when a rule's last deadline passes with no decision."""

    EXPIRE = "expire", "expire"
    DENY = "deny", "deny"
    APPROVE = "approve", "approve"  # only with fail_open: true

    @property
    def status(self) -> str:
        """The status the request ends in (a value of ``approvals.models.Status``)."""
        return {"expire": "expired", "deny": "denied", "approve": "approved"}[self.value]


ROLE_FIELDS = {"kind", "name", "title", "members", "email"}
CLASS_FIELDS = {"kind", "name", "title", "sla", "calendar"}
CALENDAR_FIELDS = {"kind", "name", "title", "timezone", "hours", "holidays"}
POLICY_FIELDS = {"kind", "name", "priority", "rules"}
RULE_FIELDS = {
    "name", "actions", "when", "class", "levels", "on_timeout", "fail_open",
    "ticket", "approvals", "editable", "remind", "calendar",
}  # fmt: skip
LEVEL_FIELDS = {"role", "deadline"}


class LevelSpec(TypedDict):
    role: str
    deadline: int  # seconds


# A rule as validated and stored in PolicyVersion.spec (JSON); "class" is a
# keyword, hence the functional form. ``rule_document`` turns it back into
# the form people write, ``rule_rows`` into the admin's rows.
RuleSpec = TypedDict(
    "RuleSpec",
    {
        "name": str,
        "actions": list[str],
        "when": str | None,  # CEL
        "class": str,
        "levels": list[LevelSpec],
        "on_timeout": str,  # an OnTimeout value
        "fail_open": bool,
        "ticket": bool,
        "approvals": int,
        "editable": bool,
        "remind": int | None,  # seconds
        "calendar": NotRequired[str],
    },
)


class PolicySpec(TypedDict):
    priority: int
    rules: list[RuleSpec]


@dataclass
class Catalog:
    """What exists outside the documents being validated."""

    roles: dict[str, int] = field(default_factory=dict)  # name -> number of members now
    group_members: dict[str, int] = field(default_factory=dict)  # name -> members via groups
    classes: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)  # usernames that exist (those asked about)
    policies: dict[str, dict] = field(default_factory=dict)  # name -> current spec
    calendars: set[str] = field(default_factory=set)
    class_slas: dict[str, int | None] = field(default_factory=dict)  # name -> SLA seconds
    # For the lint about who would really be notified; roles missing here are
    # not checked. Members count those through groups; addresses are the
    # role's email, else its members' emails.
    role_people: dict[str, set[str]] = field(default_factory=dict)
    role_addresses: dict[str, set[str]] = field(default_factory=dict)
    user_emails: dict[str, str] = field(default_factory=dict)  # of the users asked about
    group_people: dict[str, set[str]] = field(default_factory=dict)  # role -> via groups


@dataclass
class LintFacts:
    """What the lint of a rule looks at beyond the rule itself."""

    members: dict[str, int] = field(default_factory=dict)  # role -> number of members
    slas: dict[str, int | None] = field(default_factory=dict)  # class -> SLA seconds
    people: dict[str, set[str]] = field(default_factory=dict)  # role -> usernames
    addresses: dict[str, set[str]] = field(default_factory=dict)  # role -> where mail goes


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    roles: list[dict] = field(default_factory=list)
    classes: list[dict] = field(default_factory=list)
    policies: list[dict] = field(default_factory=list)  # {"name": …, "spec": …}
    calendars: list[dict] = field(default_factory=list)  # normalized, see business_hours

    @property
    def ok(self) -> bool:
        return not self.errors


KINDS = {"Role": "role", "ActionClass": "action class", "Calendar": "calendar", "Policy": "policy"}


def referenced_usernames(documents: Iterable[Any]) -> set[str]:
    names: set[str] = set()
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "Role":
            members = doc.get("members") or []
            if isinstance(members, list):
                names.update(m for m in members if isinstance(m, str))
    return names


def validate_documents(documents: list[Any], catalog: Catalog) -> Report:
    """Validate documents as one change: references may point within the set."""
    report = Report()
    seen: dict[tuple[str, str], int] = {}
    class_docs: list[dict] = []
    for index, doc in enumerate(documents, start=1):
        where = f"document {index}"
        if not isinstance(doc, dict):
            report.errors.append(f"{where}: expected a mapping with a 'kind', got {_type(doc)}")
            continue
        kind, name = doc.get("kind"), doc.get("name")
        if kind not in KINDS:
            report.errors.append(
                f"{where}: unknown kind {kind!r}; use Role, ActionClass, Calendar or Policy"
            )
            continue
        label = KINDS[kind]
        if not isinstance(name, str) or not SLUG.match(name):
            report.errors.append(
                f"{where} ({kind}): name {name!r} must be a slug of a-z, 0-9 and '-'"
            )
            continue
        if (kind, name) in seen:
            report.errors.append(
                f"{label} '{name}' is defined twice (documents {seen[kind, name]} and {index})"
            )
            continue
        seen[kind, name] = index
        where = f"{label} '{name}'"
        if kind == "Role":
            _role(doc, where, catalog, report)
        elif kind == "ActionClass":
            class_docs.append(doc)  # once the calendars they may name are known
        elif kind == "Calendar":
            _calendar(doc, where, report)

    known_calendars = catalog.calendars | {c["name"] for c in report.calendars}
    for doc in class_docs:
        _action_class(doc, f"action class '{doc['name']}'", known_calendars, report)
    known_roles = set(catalog.roles) | {r["name"] for r in report.roles}
    known_classes = catalog.classes | {c["name"] for c in report.classes}
    for doc in documents:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "Policy"
            and SLUG.match(str(doc.get("name", "")))
        ):
            spec = validate_policy(doc, known_roles, known_classes, report.errors, known_calendars)
            if spec is not None:
                report.policies.append({"name": doc["name"], "spec": spec})
    if report.ok:
        report.warnings.extend(_lint(report, catalog))
    return report


def validate_policy(
    doc: dict,
    roles: set[str],
    classes: set[str],
    errors: list[str],
    calendars: set[str] | None = None,
) -> PolicySpec | None:
    """Normalize one policy document; append errors and return None if invalid."""
    where = f"policy '{doc['name']}'"
    before = len(errors)
    _unknown_fields(doc, POLICY_FIELDS, where, errors)
    priority = doc.get("priority", 100)
    if isinstance(priority, bool) or not isinstance(priority, int):
        errors.append(f"{where}: priority must be a whole number (lower is consulted first)")
    rules_raw = doc.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        errors.append(f"{where}: needs a non-empty list of rules")
        return None
    rules: list[RuleSpec] = []
    names: set[str] = set()
    for position, raw in enumerate(rules_raw, start=1):
        rule = _rule(raw, f"{where}, rule {position}", roles, classes, errors, calendars)
        if rule is None:
            continue
        if rule["name"] in names:
            errors.append(f"{where}: two rules are named '{rule['name']}'; rule names must differ")
        names.add(rule["name"])
        rules.append(rule)
    if len(errors) > before:
        return None
    return {"priority": priority, "rules": rules}


def _rule(
    raw: Any,
    where: str,
    roles: set[str],
    classes: set[str],
    errors: list,
    calendars: set[str] | None = None,
) -> RuleSpec | None:
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping, got {_type(raw)}")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not SLUG.match(name):
        errors.append(f"{where}: name {name!r} must be a slug of a-z, 0-9 and '-'")
        return None
    where = f"{where.rsplit(', rule', 1)[0]}, rule '{name}'"
    rule, by_field = validate_rule(raw, roles, classes, calendars)
    for field_name, messages in by_field.items():
        for message in messages:
            joiner = ", " if field_name == "levels" and message.startswith("level ") else ": "
            errors.append(f"{where}{joiner}{message}")
    return rule


def validate_rule(
    raw: dict, roles: set[str], classes: set[str], calendars: set[str] | None = None
) -> tuple[RuleSpec | None, dict[str, list[str]]]:
    """Normalize one rule (the document form) into its spec; on error return
    None and the messages by field.

    The admin shows these messages at the field they are about; ``apply``
    prefixes them with the policy and rule.
    """
    problems: dict[str, list[str]] = {}

    def add(field_name: str, message: str) -> None:
        problems.setdefault(field_name, []).append(message)

    _check_name(raw, add)
    _check_fields(raw, add)
    actions = _check_actions(raw, add)
    _check_when(raw, add)
    _check_class(raw, classes, add)
    levels = _check_levels(raw, roles, add)
    _check_on_timeout(raw, add)
    _check_approvals(raw, add)
    flags = {flag: _check_flag(raw, flag, add) for flag in ("fail_open", "ticket", "editable")}
    remind = _check_remind(raw, add)
    _check_calendar(raw, calendars or set(), add)
    if problems:
        return None, problems
    rule: RuleSpec = {
        "name": raw["name"],
        "actions": actions,
        "when": raw.get("when"),
        "class": raw["class"],
        "levels": levels,
        "on_timeout": raw.get("on_timeout", OnTimeout.EXPIRE.value),
        "fail_open": flags["fail_open"],
        "ticket": flags["ticket"],
        "approvals": raw.get("approvals", 1),
        "editable": flags["editable"],
        "remind": remind,
    }
    # Only when set: specs stored before calendars existed stay equal to
    # what the same YAML normalizes to now, so re-applying makes no version.
    if raw.get("calendar") is not None:
        rule["calendar"] = raw["calendar"]
    return rule, {}


def rule_document(rule: RuleSpec) -> dict[str, Any]:
    """A rule's spec back in the form people write (and ``validate_rule`` reads):
    durations as text, optional fields only when set."""
    out: dict[str, Any] = {"name": rule["name"], "actions": list(rule["actions"])}
    if rule["when"] is not None:
        out["when"] = rule["when"]
    out["class"] = rule["class"]
    out["levels"] = [
        {"role": level["role"], "deadline": format_duration(level["deadline"])}
        for level in rule["levels"]
    ]
    out["on_timeout"] = rule["on_timeout"]
    for key in ("fail_open", "ticket", "approvals", "editable"):
        out[key] = rule[key]  # type: ignore[literal-required]
    if rule["remind"] is not None:
        out["remind"] = format_duration(rule["remind"])
    if rule.get("calendar"):
        out["calendar"] = rule["calendar"]
    return out


# --- the checks of one rule: each adds its problems by field ---------------------

Add = Callable[[str, str], None]


def _check_name(raw: dict, add: Add) -> None:
    name = raw.get("name")
    if not isinstance(name, str) or not SLUG.match(name):
        add("name", f"name {name!r} must be a slug of a-z, 0-9 and '-'")


def _check_fields(raw: dict, add: Add) -> None:
    unknown = sorted(set(map(str, raw)) - RULE_FIELDS)
    if unknown:
        add("__all__", f"unknown field(s) {', '.join(unknown)}; allowed: {_names(RULE_FIELDS)}")


def _check_actions(raw: dict, add: Add) -> list[str]:
    actions = raw.get("actions")
    if not isinstance(actions, list) or not actions:
        add("actions", "'actions' needs a non-empty list of globs, e.g. [\"refund.*\"]")
        return []
    for glob in actions:
        if not isinstance(glob, str) or not GLOB.match(glob):
            add("actions", f"action glob {glob!r} may use only a-z 0-9 _ . : - and * ? [ ]")
    return list(actions)


def _check_when(raw: dict, add: Add) -> None:
    when = raw.get("when")
    if when is None:
        return
    if not isinstance(when, str) or not when.strip():
        add("when", "'when' must be a CEL expression in a string")
        return
    try:
        check_condition(when)
    except ConditionError as exc:
        add("when", str(exc))


def _check_class(raw: dict, classes: set[str], add: Add) -> None:
    action_class = raw.get("class")
    if not isinstance(action_class, str) or action_class not in classes:
        add(
            "class",
            f"unknown action class {action_class!r}; "
            f"define it with kind: ActionClass (known: {_names(classes)})",
        )


def _check_levels(raw: dict, roles: set[str], add: Add) -> list[LevelSpec]:
    level_errors: list[str] = []
    levels = _levels(raw.get("levels"), "", roles, level_errors)
    for message in level_errors:
        add("levels", message.removeprefix(", ").removeprefix(": "))
    return levels


def _check_on_timeout(raw: dict, add: Add) -> None:
    on_timeout = raw.get("on_timeout", OnTimeout.EXPIRE.value)
    if on_timeout not in OnTimeout.values:
        add("on_timeout", f"on_timeout {on_timeout!r} must be expire, deny or approve")
    elif on_timeout == OnTimeout.APPROVE and raw.get("fail_open", False) is not True:
        add(
            "on_timeout",
            "on_timeout: approve approves on silence; "
            "set fail_open: true to mean it, or use expire",
        )


def _check_approvals(raw: dict, add: Add) -> None:
    approvals = raw.get("approvals", 1)
    if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 1:
        add("approvals", "approvals must be a whole number of at least 1")


def _check_flag(raw: dict, flag: str, add: Add) -> bool:
    value = raw.get(flag, False)
    if not isinstance(value, bool):
        add(flag, f"{flag} must be true or false")
    return value is True


def _check_remind(raw: dict, add: Add) -> int | None:
    if raw.get("remind") is None:
        return None
    remind_errors: list[str] = []
    remind = _duration(raw["remind"], "remind", remind_errors)
    for message in remind_errors:
        add("remind", message)
    return remind


def _check_calendar(raw: dict, calendars: set[str], add: Add) -> None:
    calendar = raw.get("calendar")
    if calendar is not None and (not isinstance(calendar, str) or calendar not in calendars):
        add(
            "calendar",
            f"unknown calendar {calendar!r}; define it with kind: Calendar "
            f"(known: {_names(calendars)})",
        )


def _levels(raw: Any, where: str, roles: set[str], errors: list[str]) -> list[LevelSpec]:
    if not isinstance(raw, list) or not raw:
        errors.append(f"{where}: needs at least one level (a role and a deadline)")
        return []
    levels: list[LevelSpec] = []
    for number, level in enumerate(raw, start=1):
        at = f"{where}, level {number}"
        if not isinstance(level, dict):
            errors.append(f"{at}: expected a mapping with role and deadline, got {_type(level)}")
            continue
        _unknown_fields(level, LEVEL_FIELDS, at, errors)
        role = level.get("role")
        if not isinstance(role, str) or role not in roles:
            errors.append(
                f"{at}: unknown role {role!r}; define it with kind: Role (known: {_names(roles)})"
            )
        if level.get("deadline") is None:
            errors.append(f"{at}: needs a deadline, e.g. deadline: 30m")
            deadline = None
        else:
            deadline = _duration(level["deadline"], f"{at}: deadline", errors)
            if deadline is not None and deadline <= 0:
                errors.append(f"{at}: deadline must be longer than zero")
        if levels and role == levels[-1]["role"]:
            errors.append(
                f"{at}: role '{role}' also owns level {number - 1}; escalation would land "
                "in the same inbox, so pick a different fallback role"
            )
        levels.append({"role": role, "deadline": deadline})  # type: ignore[typeddict-item]
    return levels


def _role(doc: dict, where: str, catalog: Catalog, report: Report) -> None:
    before = len(report.errors)
    _unknown_fields(doc, ROLE_FIELDS, where, report.errors)
    title = doc.get("title", "")
    if not isinstance(title, str):
        report.errors.append(f"{where}: title must be text")
    members = doc.get("members") or []
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        report.errors.append(f"{where}: members must be a list of usernames")
        members = []
    missing = sorted(set(members) - catalog.users)
    if missing:
        report.errors.append(
            f"{where}: no user named {', '.join(missing)}; create the user(s) first"
        )
    email = doc.get("email") or ""
    if email:
        try:
            validate_email(email)
        except (ValidationError, TypeError):
            report.errors.append(f"{where}: email {email!r} is not an email address")
    if len(report.errors) == before:
        report.roles.append(
            {"name": doc["name"], "title": title, "email": email, "members": sorted(set(members))}
        )


def _action_class(doc: dict, where: str, calendars: set[str], report: Report) -> None:
    before = len(report.errors)
    _unknown_fields(doc, CLASS_FIELDS, where, report.errors)
    title = doc.get("title", "")
    if not isinstance(title, str):
        report.errors.append(f"{where}: title must be text")
    sla = None
    if doc.get("sla") is not None:
        sla = _duration(doc["sla"], f"{where}: sla", report.errors)
        if sla is not None and sla <= 0:
            report.errors.append(f"{where}: sla must be longer than zero")
    calendar = doc.get("calendar")
    if calendar is not None and (not isinstance(calendar, str) or calendar not in calendars):
        report.errors.append(
            f"{where}: unknown calendar {calendar!r}; define it with kind: Calendar "
            f"(known: {_names(calendars)})"
        )
    if len(report.errors) == before:
        report.classes.append(
            {"name": doc["name"], "title": title, "sla": sla, "calendar": calendar}
        )


def _calendar(doc: dict, where: str, report: Report) -> None:
    errors: list[str] = []
    _unknown_fields(doc, CALENDAR_FIELDS, where, errors)
    title = doc.get("title", "")
    if not isinstance(title, str):
        errors.append(f"{where}: title must be text")
    spec, problems = normalize_calendar(
        doc["name"], doc.get("timezone"), doc.get("hours"), doc.get("holidays")
    )
    errors += [f"{where}: {problem}" for problem in problems]
    report.errors += errors
    if not errors:
        report.calendars.append({**spec, "title": title})


def lint_facts(report: Report, catalog: Catalog) -> LintFacts:
    """The catalog as the documents would leave it."""
    facts = LintFacts(
        members=dict(catalog.roles),
        slas=dict(catalog.class_slas),
        people={name: set(people) for name, people in catalog.role_people.items()},
        addresses={name: set(found) for name, found in catalog.role_addresses.items()},
    )
    for role in report.roles:
        name = role["name"]
        # YAML lists direct members; members through groups come on top.
        facts.members[name] = len(role["members"]) + catalog.group_members.get(name, 0)
        people = set(role["members"]) | catalog.group_people.get(name, set())
        facts.people[name] = people
        if role["email"]:
            facts.addresses[name] = {role["email"]}
        elif all(user in catalog.user_emails for user in people):
            facts.addresses[name] = {catalog.user_emails[user] for user in people} - {""}
    for action_class in report.classes:
        facts.slas[action_class["name"]] = action_class["sla"]
    return facts


def _lint(report: Report, catalog: Catalog) -> list[str]:
    """Warnings: the configuration is valid but probably not what was meant."""
    warnings = []
    facts = lint_facts(report, catalog)
    members = facts.members
    policies = dict(catalog.policies)
    policies.update({p["name"]: p["spec"] for p in report.policies})
    changed = {p["name"] for p in report.policies}
    for name, spec in policies.items():
        if name not in changed:
            continue
        for rule in spec["rules"]:
            where = f"policy '{name}', rule '{rule['name']}'"
            warnings.extend(lint_rule(rule, where, members, facts))
    warnings.extend(_shadowed(policies, changed))
    return warnings


def lint_rule(
    rule: RuleSpec, where: str, members: dict[str, int], facts: LintFacts | None = None
) -> list[str]:
    warnings = []
    facts = facts or LintFacts(members=members)
    total = sum(level["deadline"] for level in rule["levels"])
    if total > DAY:
        warnings.append(
            f"{where}: the whole chain takes longer than 24h; "
            "a decision this slow should probably not be automated"
        )
    if len(rule["levels"]) > 2:
        warnings.append(
            f"{where}: {len(rule['levels'])} levels; more than two rarely helps, "
            "consider a shorter chain"
        )
    for number, level in enumerate(rule["levels"], start=1):
        if level["deadline"] < 60:
            warnings.append(
                f"{where}, level {number}: deadline under a minute leaves nobody time to decide"
            )
        if members.get(level["role"], 0) == 0:
            warnings.append(
                f"{where}, level {number}: role '{level['role']}' has no members; "
                "nobody would see these requests"
            )
        if rule["remind"] and rule["remind"] >= level["deadline"]:
            warnings.append(
                f"{where}, level {number}: remind is not shorter than the deadline, "
                "so the reminder would go out at once"
            )
        addresses = facts.addresses.get(level["role"])
        if addresses is not None and not addresses:
            warnings.append(
                f"{where}, level {number}: role '{level['role']}' has no reachable address "
                "(no role email and no member with an email); nobody would be notified"
            )
    warnings += _lint_chain(rule, where, facts)
    return warnings


def _lint_chain(rule: RuleSpec, where: str, facts: LintFacts) -> list[str]:
    warnings = []
    levels = rule["levels"]
    if len(levels) == 1:
        warnings.append(
            f"{where}: a single level, no named fallback; if its role does not decide in "
            "time the request just ends: add a second level with a fallback role"
        )
    sla = facts.slas.get(rule["class"])
    if sla and levels[0]["deadline"] > sla:
        warnings.append(
            f"{where}, level 1: deadline {format_duration(levels[0]['deadline'])} is longer "
            f"than the SLA of class '{rule['class']}' ({format_duration(sla)}), so the first "
            "role alone can miss it"
        )
    for number, (this, following) in enumerate(pairwise(levels), 1):
        for what, found in (("member", facts.people), ("notification address", facts.addresses)):
            shared = found.get(this["role"], set()) & found.get(following["role"], set())
            if shared:
                warnings.append(
                    f"{where}, levels {number} and {number + 1}: roles '{this['role']}' and "
                    f"'{following['role']}' share the {what}(s) {', '.join(sorted(shared))}; "
                    "escalation would land in the same inbox"
                )
    return warnings


def _shadowed(policies: dict[str, dict], changed: set[str]) -> list[str]:
    ordered = sorted(policies.items(), key=lambda item: (item[1]["priority"], item[0]))
    earlier: list[tuple[str, dict]] = []
    warnings = []
    for name, spec in ordered:
        for rule in spec["rules"]:
            shadow = next(
                (
                    (pname, prior)
                    for pname, prior in earlier
                    if prior["when"] is None and _covers(prior["actions"], rule["actions"])
                ),
                None,
            )
            if shadow and (name in changed or shadow[0] in changed):
                warnings.append(
                    f"policy '{name}', rule '{rule['name']}' can never match: "
                    f"policy '{shadow[0]}', rule '{shadow[1]['name']}' always matches first; "
                    "reorder the rules, change priorities or add a 'when' to the earlier rule"
                )
            earlier.append((name, rule))
    return warnings


def _covers(earlier_globs: list[str], globs: list[str]) -> bool:
    def covered(glob: str) -> bool:
        literal = not any(ch in glob for ch in "*?[")
        return any(
            prior == "*" or prior == glob or (literal and fnmatchcase(glob, prior))
            for prior in earlier_globs
        )

    return all(covered(glob) for glob in globs)


def _duration(value: Any, where: str, errors: list[str]) -> int | None:
    try:
        return parse_duration(value)
    except DurationError as exc:
        errors.append(f"{where}: {exc}")
        return None


def _unknown_fields(doc: dict, allowed: set[str], where: str, errors: list[str]) -> None:
    unknown = sorted(set(map(str, doc)) - allowed)
    if unknown:
        errors.append(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ", ".join(listed) if listed else "none"


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
