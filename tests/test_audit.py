"""The audit trail cannot be altered unnoticed, and the database refuses to alter it."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from approvals import audit
from approvals.agents import rotate_signing_secret
from approvals.canonical import canonical_json
from approvals.models import ApprovalRequest, AuditEvent, AuditSeal
from tests.helpers import INVOICE, decide


def verify() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


@contextlib.contextmanager
def as_database_owner():
    """Someone with the rights to bypass triggers (and foreign keys) on PostgreSQL."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


def sql(statement: str, *params) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_untouched_trail_verifies(maria, invoice):
    decide(maria, invoice["id"], "approve")
    out = verify()
    assert "audit trail intact" in out
    assert "requests: 1;" in out


def test_the_database_refuses_to_update_or_delete_an_event(maria, invoice):
    decide(maria, invoice["id"], "approve")
    for statement in (
        'UPDATE approvals_auditevent SET actor = \'{"user": "tom"}\' WHERE request_id = %s',
        "DELETE FROM approvals_auditevent WHERE request_id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            sql(statement, invoice["id"])
    assert AuditEvent.objects.filter(request_id=invoice["id"]).count() == 2


def test_an_edited_event_is_reported(maria, invoice):
    decide(maria, invoice["id"], "approve")
    with as_database_owner():
        AuditEvent.objects.filter(request_id=invoice["id"], kind="approved").update(
            actor={"user": "tom"}
        )

    with pytest.raises(CommandError, match=r"event #2: content altered") as failure:
        verify()
    assert failure.value.returncode == 1
    assert invoice["id"] in str(failure.value)


def test_an_event_rehashed_without_the_key_is_reported(maria, invoice):
    """Anyone can recompute a plain hash chain; not an HMAC without the key."""
    decide(maria, invoice["id"], "deny", reason="no")
    event = AuditEvent.objects.get(request_id=invoice["id"], kind="denied")
    event.data = {**event.data, "reason": "duplicate invoice"}
    content = {
        "request": invoice["id"], "seq": event.seq, "kind": event.kind,
        "at": event.at.isoformat(), "actor": event.actor, "role": event.role,
        "level": event.level, "policy": event.policy, "policy_version": event.policy_version,
        "rule": event.rule, "action": event.action, "summary": event.summary,
        "context": event.context, "data": event.data, "prev_hash": event.prev_hash,
    }  # fmt: skip
    forged = hashlib.sha256(canonical_json(content)).hexdigest()
    with as_database_owner():
        AuditEvent.objects.filter(pk=event.pk).update(data=event.data, hash=forged)
        ApprovalRequest.objects.filter(pk=invoice["id"]).update(
            decision_reason="duplicate invoice", audit_head=forged
        )

    with pytest.raises(CommandError, match="content altered"):
        verify()


def test_a_deleted_last_event_is_reported(maria, invoice):
    decide(maria, invoice["id"], "approve")
    with as_database_owner():
        AuditEvent.objects.filter(request_id=invoice["id"], kind="approved").delete()

    with pytest.raises(CommandError, match="latest event"):
        verify()


def test_a_deleted_middle_event_is_reported(maria, tom, invoice):
    maria.post(f"/api/v1/requests/{invoice['id']}/claim")
    decide(maria, invoice["id"], "approve")
    with as_database_owner():
        AuditEvent.objects.filter(request_id=invoice["id"], kind="claimed").delete()

    with pytest.raises(CommandError, match="missing"):
        verify()


def seal_everything():
    """Seal as beat would once the lag has passed for every request so far."""
    later = timezone.now() + timedelta(seconds=settings.AUDIT_SEAL_LAG_SECONDS)
    return audit.seal(now=later)


def test_beat_seals_each_window_once(bot, invoice):
    assert audit.seal() is None  # too recent: a create could still be open in that window
    sealed = seal_everything()
    assert sealed.requests == 1
    assert seal_everything() is None  # nothing new
    bot.post("/api/v1/requests", {**INVOICE, "summary": "another"}, format="json")
    assert seal_everything().requests == 1
    assert "seals: 2" in verify()


# Committed rows: PostgreSQL checks the rows' foreign keys when they are
# inserted, not at the end of a test transaction after the deletion.
@pytest.mark.django_db(transaction=True)
def test_a_request_deleted_with_all_its_events_is_reported(bot, invoice):
    second = bot.post("/api/v1/requests", {**INVOICE, "summary": "another"}, format="json")
    assert second.status_code == 201
    seal_everything()
    assert "requests: 2;" in verify()
    with as_database_owner():
        for relation in ApprovalRequest._meta.related_objects:
            table, column = relation.related_model._meta.db_table, relation.field.column
            sql(f"DELETE FROM {table} WHERE {column} = %s", invoice["id"])
        sql("DELETE FROM approvals_approvalrequest WHERE id = %s", invoice["id"])

    with pytest.raises(CommandError, match=r"seals, event #1: .* do not match their seal"):
        verify()


def test_an_edited_seal_is_reported(invoice):
    seal_everything()
    with as_database_owner():
        AuditSeal.objects.update(requests=0)
    with pytest.raises(CommandError, match="seal altered"):
        verify()


@pytest.mark.parametrize(
    "change",
    [
        {"status": "approved"},
        {"decision_reason": "rewritten"},
        {"payload": {"invoice": "INV-1042", "pay": 99999.0}},
        {"summary": "something else"},
    ],
)
def test_a_request_row_that_disagrees_with_its_chain_is_reported(maria, invoice, change):
    decide(maria, invoice["id"], "deny", reason="no")
    ApprovalRequest.objects.filter(pk=invoice["id"]).update(**change)

    with pytest.raises(CommandError, match="differ from its"):
        verify()


def test_an_approved_payload_swapped_on_the_row_is_reported(maria, invoice):
    decide(maria, invoice["id"], "approve")
    ApprovalRequest.objects.filter(pk=invoice["id"]).update(
        decision_payload={"invoice": "INV-1042", "pay": 99999.0}
    )
    with pytest.raises(CommandError, match="status or decision differ"):
        verify()


def test_the_created_event_records_the_bodys_sha256(invoice):
    created = AuditEvent.objects.get(request_id=invoice["id"], kind="created")
    row = ApprovalRequest.objects.get(pk=invoice["id"])
    assert (
        created.data["body_sha256"]
        == row.body_sha256
        == hashlib.sha256(canonical_json(INVOICE)).hexdigest()
    )


def config_events(kind: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(request__isnull=True, kind=kind).order_by("seq"))


def test_configuration_changes_are_audited_with_who_made_them(root, agent, users):
    from policies.models import Role

    applied = config_events("policy_changed")
    assert {e.policy for e in applied} == {"finance-invoices", "customer-refunds"}
    assert applied[0].actor == {"user": "tests"}
    assert {e.data["member"] for e in config_events("role_member_added")} >= {"maria", "carol"}
    assert config_events("agent_created")[0].data["agent"] == "billing-bot"

    cfo = Role.objects.get(name="cfo")
    root.post(
        f"/admin/policies/role/{cfo.pk}/permissions/user-manage/{users['olivia'].pk}/",
        {"permissions": ["act_for_role"]},
    )
    granted = config_events("role_member_added")[-1]
    assert (granted.actor, granted.role, granted.data["member"]) == (
        {"user": "root"}, "cfo", "olivia",
    )  # fmt: skip
    root.post(
        f"/admin/policies/role/{cfo.pk}/permissions/user-manage/{users['olivia'].pk}/",
        {"permissions": ["view_role"]},  # guardian ignores an empty form
    )
    assert config_events("role_member_removed")[-1].actor == {"user": "root"}
    assert config_events("role_perm_granted")[-1].data["permission"] == "view_role"

    root.post(
        "/admin/approvals/agent/",
        {"action": "rotate_key", "_selected_action": [agent.agent.pk]},
    )
    rotated = config_events("agent_key_rotated")[-1]
    assert rotated.actor == {"user": "root"}
    assert "cs_" not in str(rotated.data)  # never the key itself
    assert "audit trail intact" in verify()


def test_an_edited_configuration_event_is_reported(agent):
    rotate_signing_secret(agent.agent, actor={"user": "mallory"})
    with as_database_owner():
        AuditEvent.objects.filter(kind="agent_secret_rotated").update(actor={"user": "alice"})

    with pytest.raises(CommandError, match=r"broken: configuration, event #\d+: content altered"):
        verify()


def test_a_users_groups_and_flags_changed_in_the_admin_are_audited(root, users):
    from django.contrib.auth.models import Group

    reviewers = Group.objects.create(name="finance-reviewers")
    maria = users["maria"]
    response = root.post(
        f"/admin/auth/user/{maria.pk}/change/",
        {
            "username": "maria",
            "email": "maria@example.com",
            "is_active": "on",
            "is_staff": "on",
            "groups": [reviewers.pk],
            "date_joined_0": "2026-11-01",
            "date_joined_1": "09:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    changed = config_events("user_changed")[-1]
    assert changed.actor == {"user": "root"}
    assert changed.data["groups"] == ["finance-reviewers"]
    assert changed.data["groups_before"] == []
    assert changed.data["flags"]["is_staff"] is True
    assert changed.data["flags_before"]["is_staff"] is False


def test_the_database_refuses_a_kind_outside_the_vocabulary(invoice):
    """Kinds are AuditEvent.Kind; a typo would otherwise be a new kind nobody filters on."""
    event = AuditEvent.objects.get(request_id=invoice["id"])
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(
            **{f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields
               if f.name != "id"} | {"seq": 99, "kind": "aproved"},
        )  # fmt: skip
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.filter(pk=invoice["id"]).update(on_timeout="escalate")
