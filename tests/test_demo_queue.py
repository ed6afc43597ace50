"""The demo opens on a living queue: pending requests across roles, one about to
escalate, one already expired with its ticket; loading twice adds nothing."""

from __future__ import annotations

import io
from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from approvals.models import ApprovalRequest, AuditEvent


def test_loaddemo_seeds_a_living_queue_once(db):
    call_command("loaddemo", stdout=io.StringIO())
    call_command("loaddemo", stdout=io.StringIO())

    requests = {r.idempotency_key: r for r in ApprovalRequest.objects.select_related("owner_role")}
    assert len(requests) == 4
    pending = [r for r in requests.values() if r.status == "pending"]
    assert {r.owner_role.name for r in pending} == {
        "support-lead", "finance-manager", "compliance-officer",
    }  # fmt: skip

    soon = requests["demo-seed:invoice-2231"]
    assert soon.status == "pending" and soon.level == 1
    assert timedelta(0) < soon.due_at - timezone.now() <= timedelta(minutes=3)

    expired = requests["demo-seed:invoice-1987"]
    assert expired.status == "expired"
    assert expired.ticket.status == "open"
    kinds = list(
        AuditEvent.objects.filter(request=expired).order_by("seq").values_list("kind", flat=True)
    )
    assert kinds[:3] == ["created", "escalated", "expired"]
    assert "ticket_opened" in kinds
