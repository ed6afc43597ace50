"""The audit trail cannot be altered unnoticed."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from approvals.models import AuditEvent
from tests.conftest import decide


def verify() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_an_untouched_trail_verifies(maria, invoice):
    decide(maria, invoice["id"], "approve")
    assert "audit trail intact: 2 event(s) verified" in verify()


def test_an_edited_event_is_reported(maria, invoice):
    decide(maria, invoice["id"], "approve")
    AuditEvent.objects.filter(request_id=invoice["id"], kind="approved").update(
        actor={"user": "tom"}
    )

    with pytest.raises(CommandError, match=r"event #2: content altered") as failure:
        verify()
    assert failure.value.returncode == 1
    assert invoice["id"] in str(failure.value)


def test_a_deleted_last_event_is_reported(maria, invoice):
    decide(maria, invoice["id"], "approve")
    AuditEvent.objects.filter(request_id=invoice["id"], kind="approved").delete()

    with pytest.raises(CommandError, match="latest event"):
        verify()


def test_a_deleted_middle_event_is_reported(maria, tom, invoice):
    maria.post(f"/api/v1/requests/{invoice['id']}/claim")
    decide(maria, invoice["id"], "approve")
    AuditEvent.objects.filter(request_id=invoice["id"], kind="claimed").delete()

    with pytest.raises(CommandError, match="missing"):
        verify()
