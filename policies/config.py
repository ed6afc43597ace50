"""Configuration as YAML: apply documents in one transaction, export them back.

Applying is idempotent: documents equal to what is stored change nothing and
make no new policy version. Export then apply is a no-op (a round trip).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from guardian.shortcuts import assign_perm, remove_perm

from approvals.models import AuditKind as Kind
from policies.business_hours import compact_hours
from policies.durations import format_duration
from policies.models import ACT_FOR_ROLE, ActionClass, Calendar, Policy, PolicyVersion, Role
from policies.rule_rows import rows_from_spec
from policies.spec import (
    Catalog,
    PolicySpec,
    Report,
    referenced_usernames,
    rule_document,
    validate_documents,
)


class ConfigError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass
class Outcome:
    report: Report
    changes: list[str] = field(default_factory=list)


def load_yaml(text: str, source: str = "<input>") -> list[Any]:
    """Parse multi-document YAML; empty documents (a trailing ``---``) are skipped."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}: not valid YAML{at}: {problem}"]) from None


def current_catalog(documents: list[Any]) -> Catalog:
    group_members = dict(
        Role.objects.annotate(
            n=Count(
                "rolegroupobjectpermission__group__user",
                filter=Q(rolegroupobjectpermission__permission__codename=ACT_FOR_ROLE),
                distinct=True,
            )
        ).values_list("name", "n")
    )
    usernames = referenced_usernames(documents)
    users = set(
        get_user_model().objects.filter(username__in=usernames).values_list("username", flat=True)
    )
    people: dict[str, set[str]] = {}
    addresses: dict[str, set[str]] = {}
    emails: dict[str, str] = {}
    for role in Role.objects.all():
        members = dict(role.members().values_list("username", "email"))
        emails.update(members)
        people[role.name] = set(members)
        addresses[role.name] = {role.email} if role.email else set(members.values()) - {""}
    group_people = _group_people()
    for found in group_people.values():
        people_emails = get_user_model().objects.filter(username__in=found - set(emails))
        emails.update(people_emails.values_list("username", "email"))
    emails.update(
        get_user_model()
        .objects.filter(username__in=usernames - set(emails))
        .values_list("username", "email")
    )
    return Catalog(
        roles={name: len(members) for name, members in people.items()},
        group_members=group_members,
        classes=set(ActionClass.objects.values_list("name", flat=True)),
        users=users,
        calendars=set(Calendar.objects.values_list("name", flat=True)),
        class_slas=dict(ActionClass.objects.values_list("name", "sla_seconds")),
        role_people=people,
        role_addresses=addresses,
        user_emails=emails,
        group_people=group_people,
        policies={
            p.name: p.current_version.spec
            for p in Policy.objects.select_related("current_version")
            if p.current_version is not None
        },
    )


def _group_people() -> dict[str, set[str]]:
    """Role -> usernames of the active users who act for it through a group."""
    rows = (
        Role.objects.filter(rolegroupobjectpermission__permission__codename=ACT_FOR_ROLE)
        .filter(rolegroupobjectpermission__group__user__is_active=True)
        .values_list("name", "rolegroupobjectpermission__group__user__username")
    )
    found: dict[str, set[str]] = {}
    for role, username in rows:
        found.setdefault(role, set()).add(username)
    return found


def apply_documents(documents: list[Any], *, author: str, dry_run: bool = False) -> Outcome:
    """Validate, then write everything in one transaction (or nothing on error).

    With ``dry_run`` the changes are computed inside the transaction and rolled
    back, so the dry run reports exactly what a real run would do.
    """
    report = validate_documents(documents, current_catalog(documents))
    if not report.ok:
        raise ConfigError(report.errors)
    outcome = Outcome(report=report)
    with transaction.atomic():
        for doc in report.roles:
            outcome.changes += _apply_role(doc, author)
        for doc in report.calendars:
            outcome.changes += _apply_calendar(doc, author)
        for doc in report.classes:
            outcome.changes += _apply_class(doc, author)
        for doc in report.policies:
            outcome.changes += _apply_policy(doc["name"], doc["spec"], author=author)
        if dry_run:
            transaction.set_rollback(True)
    return outcome


def _apply_role(doc: dict, author: str) -> list[str]:
    role, created = Role.objects.get_or_create(
        name=doc["name"], defaults={"title": doc["title"], "email": doc["email"]}
    )
    changes = [f"create role {role.name}"] if created else []
    if not created and (role.title, role.email) != (doc["title"], doc["email"]):
        role.title, role.email = doc["title"], doc["email"]
        role.save(update_fields=["title", "email"])
        changes.append(f"update role {role.name}")
    if changes:
        kind = Kind.ROLE_CREATED if created else Kind.ROLE_UPDATED
        _record(kind, author, changes[0], role=role.name)
    current = set(role.direct_member_usernames())
    wanted = set(doc["members"])
    users = get_user_model().objects.filter(username__in=current ^ wanted)
    for user in users:
        if user.username in wanted:
            assign_perm(f"policies.{ACT_FOR_ROLE}", user, role)
            changes.append(f"add {user.username} to role {role.name}")
            record_membership(role, user.username, granted=True, actor={"user": author})
        else:
            remove_perm(f"policies.{ACT_FOR_ROLE}", user, role)
            changes.append(f"remove {user.username} from role {role.name}")
            record_membership(role, user.username, granted=False, actor={"user": author})
    return changes


def _apply_calendar(doc: dict, author: str) -> list[str]:
    fields = {key: doc[key] for key in ("title", "timezone", "hours", "holidays")}
    calendar, created = Calendar.objects.get_or_create(name=doc["name"], defaults=fields)
    if created:
        _record(Kind.CALENDAR_CREATED, author, f"calendar {calendar.name} created")
        return [f"create calendar {calendar.name}"]
    if all(getattr(calendar, key) == value for key, value in fields.items()):
        return []
    Calendar.objects.filter(pk=calendar.pk).update(**fields)
    _record(Kind.CALENDAR_CHANGED, author, f"calendar {calendar.name} changed")
    return [f"update calendar {calendar.name}"]


def _apply_class(doc: dict, author: str) -> list[str]:
    calendar = Calendar.objects.get(name=doc["calendar"]) if doc["calendar"] else None
    fields = {"title": doc["title"], "sla_seconds": doc["sla"], "calendar": calendar}
    action_class, created = ActionClass.objects.get_or_create(name=doc["name"], defaults=fields)
    if created:
        _record(Kind.ACTION_CLASS_CREATED, author, f"action class {action_class.name} created")
        return [f"create action class {action_class.name}"]
    current = (action_class.title, action_class.sla_seconds, action_class.calendar_id)
    if current == (doc["title"], doc["sla"], calendar.pk if calendar else None):
        return []
    ActionClass.objects.filter(pk=action_class.pk).update(**fields)
    _record(Kind.ACTION_CLASS_CHANGED, author, f"action class {action_class.name} changed")
    return [f"update action class {action_class.name}"]


class SavedVersion(NamedTuple):
    version: PolicyVersion | None  # None: the spec was the current one
    warnings: list[str]  # the lint of the new version (none when unchanged)


def save_policy_version(
    name: str, spec: PolicySpec, *, author: str, lint: bool = True
) -> SavedVersion:
    """Record ``spec`` as the policy's new current version, and lint it.

    The policy row is locked so that two concurrent edits get consecutive
    version numbers instead of colliding on the same one. ``apply`` passes
    ``lint=False``: it linted all its documents together before saving.
    """
    policy, _ = Policy.objects.get_or_create(name=name, defaults={"priority": spec["priority"]})
    policy = (
        Policy.objects.select_for_update(of=("self",))
        .select_related("current_version")
        .get(pk=policy.pk)
    )
    previous = policy.current_version
    if previous is not None and previous.spec == spec:
        return SavedVersion(None, [])
    before = policy_yaml(name, previous.spec) if previous else ""
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            policy_yaml(name, spec).splitlines(keepends=True),
            fromfile=f"{name} v{previous.number}" if previous else "(none)",
            tofile=f"{name} v{(previous.number if previous else 0) + 1}",
        )
    )
    version = PolicyVersion.objects.create(
        policy=policy,
        number=(previous.number if previous else 0) + 1,
        spec=spec,
        author=author,
        diff=diff,
    )
    policy.current_version = version
    policy.priority = spec["priority"]
    policy.save(update_fields=["current_version", "priority"])
    rows_from_spec(policy, spec)
    _record(
        Kind.POLICY_CHANGED,
        author,
        f"policy {name} version {version.number}",
        policy=name,
        policy_version=version.number,
        data={"priority": spec["priority"], "diff": diff[:20000]},
    )
    if not lint:
        return SavedVersion(version, [])
    document = policy_document(name, spec)
    return SavedVersion(
        version, validate_documents([document], current_catalog([document])).warnings
    )


def _apply_policy(name: str, spec: PolicySpec, *, author: str) -> list[str]:
    version = save_policy_version(name, spec, author=author, lint=False).version
    _widen_scope(name, spec, author)
    if version is None:
        return []
    verb = "create" if version.number == 1 else "update"
    return [f"{verb} policy {name} (version {version.number})"]


def _widen_scope(name: str, spec: PolicySpec, author: str) -> None:
    """``apply`` is run by operators: what they route is within the policy's scope."""
    policy = Policy.objects.get(name=name)
    globs = [g for rule in spec["rules"] for g in rule["actions"] if not policy.in_scope(g)]
    if globs:
        set_scope(policy, ", ".join([*policy.scope_globs(), *dict.fromkeys(globs)]), author)


def set_scope(policy: Policy, scope: str, author: str) -> None:
    if policy.scope == scope[:500]:
        return
    policy.scope = scope[:500]
    policy.save(update_fields=["scope"])
    _record(
        Kind.POLICY_SCOPE_CHANGED,
        author,
        f"policy {policy.name} scope: {policy.scope}",
        policy=policy.name,
        data={"scope": policy.scope},
    )


def record_membership(role: Role, who: str, *, granted: bool, actor: dict, perm: str = "") -> None:
    """Role membership is a permission grant: audit each one, with who made it."""
    verb = "granted" if granted else "revoked"
    if perm:
        kind = Kind.ROLE_PERM_GRANTED if granted else Kind.ROLE_PERM_REVOKED
    else:
        kind = Kind.ROLE_MEMBER_ADDED if granted else Kind.ROLE_MEMBER_REMOVED
    from approvals import audit

    audit.record_config(
        kind,
        actor=actor,
        summary=f"{who} {verb} {perm or ACT_FOR_ROLE} on role {role.name}",
        role=role.name,
        data={"member": who, "permission": perm or ACT_FOR_ROLE},
    )


def _record(kind: Kind, author: str, summary: str, **fields: Any) -> None:
    # Imported here: approvals' models import this app's models.
    from approvals import audit

    audit.record_config(kind, actor={"user": author}, summary=summary, **fields)


# --- export -----------------------------------------------------------------


def export_documents() -> list[dict]:
    docs: list[dict] = []
    for role in Role.objects.all():
        doc: dict[str, Any] = {"kind": "Role", "name": role.name, "title": role.title}
        doc["members"] = role.direct_member_usernames()
        if role.email:
            doc["email"] = role.email
        docs.append(doc)
    for calendar in Calendar.objects.all():
        docs.append(calendar_document(calendar))
    for action_class in ActionClass.objects.select_related("calendar"):
        doc = {"kind": "ActionClass", "name": action_class.name, "title": action_class.title}
        if action_class.sla_seconds is not None:
            doc["sla"] = format_duration(action_class.sla_seconds)
        if action_class.calendar is not None:
            doc["calendar"] = action_class.calendar.name
        docs.append(doc)
    for policy in Policy.objects.select_related("current_version"):
        if policy.current_version is not None:
            docs.append(policy_document(policy.name, policy.current_version.spec))
    return docs


def calendar_document(calendar: Calendar) -> dict:
    doc: dict[str, Any] = {"kind": "Calendar", "name": calendar.name, "title": calendar.title}
    doc["timezone"] = calendar.timezone
    doc["hours"] = compact_hours(calendar.hours)
    doc["holidays"] = list(calendar.holidays)
    return doc


def policy_document(name: str, spec: PolicySpec) -> dict:
    """A normalized spec back in the YAML form people write."""
    rules = [rule_document(rule) for rule in spec["rules"]]
    return {"kind": "Policy", "name": name, "priority": spec["priority"], "rules": rules}


def policy_yaml(name: str, spec: PolicySpec) -> str:
    return dump_yaml([policy_document(name, spec)])


class _Dumper(yaml.SafeDumper):
    """Mappings in block style, short lists of plain values inline: ``[maria, tom]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(item, (str, int, float, bool)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(documents: list[dict]) -> str:
    return yaml.dump_all(
        documents,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
