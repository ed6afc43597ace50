"""The audit trail leaves the building: ``export_audit`` and ``GET /api/v1/audit``,
oldest first, JSONL or CSV with the README's fields, filtered, streamed in
constant memory; and the admin finds events by business context."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from approvals.models import AuditEvent
from tests.helpers import INVOICE, decide, reviewer_client

KEYS = {
    "request", "seq", "kind", "at", "actor", "role", "level", "policy", "action", "summary",
    "context", "hash",
}  # fmt: skip


def export(*args) -> str:
    out = io.StringIO()
    call_command("export_audit", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def story(bot, maria):
    """An invoice raised and denied yesterday (within its deadline), a refund raised today."""
    start = timezone.now() - timedelta(days=1)
    with time_machine.travel(start, tick=False) as clock:
        invoice = bot.post("/api/v1/requests", INVOICE, format="json").json()
        clock.shift(timedelta(minutes=10))
        decide(maria, invoice["id"], "deny", reason="duplicate")
    refund = {"action": "refund.issue", "summary": "Refund 40 EUR", "context": {"order": "A-9"}}
    bot.post("/api/v1/requests", refund, format="json")
    return invoice


@pytest.fixture
def auditor(users):
    user = get_user_model().objects.create_user("audrey", "audrey@example.com", "pw")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    return reviewer_client(user)


def test_jsonl_lines_carry_the_contract_fields_oldest_first(story):
    events = [json.loads(line) for line in export().splitlines()]
    assert [e["kind"] for e in events] == ["created", "denied", "created"]
    assert set(events[0]) == KEYS
    first = events[0]
    assert first["request"] == story["id"] and first["seq"] == 1
    assert first["policy"] == {
        "name": "finance-invoices",
        "version": 1,
        "rule": "invoice-discrepancy",
    }
    assert first["context"]["invoice"] == "INV-1042"
    assert first["actor"] == {"agent": "billing-bot"}
    assert first["at"].endswith("Z")
    assert first["hash"] == AuditEvent.objects.get(request_id=story["id"], seq=1).hash
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_filters_by_time_action_and_role(story):
    today = (timezone.now() - timedelta(hours=1)).isoformat()
    assert [json.loads(x)["kind"] for x in export("--since", today).splitlines()] == ["created"]
    assert len(export("--until", today).splitlines()) == 2
    invoices = [json.loads(x) for x in export("--action", "invoice.*").splitlines()]
    assert {e["action"] for e in invoices} == {"invoice.discrepancy"}
    assert len(export("--action", "refund.?ssue").splitlines()) == 1
    support = [json.loads(x) for x in export("--role", "support-lead").splitlines()]
    assert [e["action"] for e in support] == ["refund.issue"]


def test_csv_has_the_same_columns_with_context_as_json(story):
    rows = list(csv.DictReader(io.StringIO(export("--format", "csv"))))
    assert set(rows[0]) == KEYS
    assert json.loads(rows[0]["context"])["vendor"] == "Acme"
    assert json.loads(rows[0]["policy"])["rule"] == "invoice-discrepancy"
    assert rows[1]["kind"] == "denied"


def test_a_bad_time_is_a_clear_error(story):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="--since: since must be an ISO 8601 time"):
        export("--since", "last tuesday")


def test_the_api_streams_the_same_export(story, auditor):
    response = auditor.get("/api/v1/audit", {"action": "invoice.*"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    body = b"".join(response.streaming_content).decode()
    assert [json.loads(x)["kind"] for x in body.splitlines()] == ["created", "denied"]


def test_the_api_answers_csv(story, auditor):
    response = auditor.get("/api/v1/audit", {"format": "csv", "role": "support-lead"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["action"] for row in rows] == ["refund.issue"]


def test_the_api_needs_the_view_auditevent_permission(story, maria):
    response = maria.get("/api/v1/audit")
    assert response.status_code == 403
    assert "view_auditevent" in response.json()["detail"]


def test_the_api_refuses_bad_filters_with_json(story, auditor):
    response = auditor.get("/api/v1/audit", {"until": "soon", "format": "xml"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "until" in response.json()["errors"] or "format" in response.json()["errors"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the GIN index is PostgreSQL's")
def test_the_admin_finds_events_by_business_context(story, root):
    page = root.get("/admin/approvals/auditevent/", {"q": "context.invoice = INV-1042"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "INV-1042 is $1,240 over PO-77" in text and "Refund 40 EUR" not in text
    page = root.get("/admin/approvals/auditevent/", {"q": "context.order = A-9"})
    assert "Refund 40 EUR" in page.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the GIN index is PostgreSQL's")
def test_context_search_uses_the_gin_index(story):
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM approvals_auditevent WHERE context @> %s::jsonb",
            [json.dumps({"invoice": "INV-1042"})],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "audit_event_context_gin" in plan


# --- constant memory --------------------------------------------------------------------

FILL = """
INSERT INTO approvals_auditevent
    (request_id, seq, kind, at, actor, role, level, policy, policy_version, rule, action,
     summary, context, data, prev_hash, hash)
SELECT %s, 1000 + n, 'reminded', now() + n * interval '1 millisecond', '{"system": "reminder"}',
       'finance-manager', 1, 'finance-invoices', 1, 'invoice-discrepancy', 'invoice.discrepancy',
       'INV-' || n || ' is over its PO', jsonb_build_object('invoice', 'INV-' || n,
       'vendor', 'Acme Industrial Supplies and Services Ltd', 'note', repeat('x', 300)),
       '{}', '', md5(n::text) || md5(n::text)
FROM generate_series(1, %s) AS n
"""

# Peak resident memory from /proc (VmHWM belongs to this process's memory
# map, unlike ru_maxrss, which a child inherits across exec from pytest).
MEASURE = """
import os, sys
import django
django.setup()
from approvals.audit_export import Filters, lines
def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
from django.db import connection
connection.ensure_connection()
before = peak_kib()
size = 0
with open(os.devnull, "w") as sink:
    for text in lines(Filters(format=sys.argv[1])):
        sink.write(text)
        size += len(text)
print(before, peak_kib(), size)
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="server-side cursors")
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_of_100000_events_runs_in_constant_memory(story, engine_env, fmt):
    """A real process exports 100,000 events (about 50 MB of text); its peak
    memory grows by a small fraction of that."""
    with connection.cursor() as cursor:
        cursor.execute(FILL, [story["id"], 100_000])
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, fmt],
        env={**engine_env, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    before_kib, after_kib, size = map(int, result.stdout.split())
    assert size > 45_000_000
    assert (after_kib - before_kib) * 1024 < 25_000_000, (before_kib, after_kib)
