"""The SLA dashboard, /metrics and the audit export over 1,000,000 decided requests.

    .venv/bin/python bench/reports.py [--requests N] [--days D]

1. Fill PostgreSQL with N decided requests (default 1,000,000) spread over D
   days (default 90), one audit event each, and the rollup rows the engine
   would have kept as they ended, all with bulk SQL (INSERT ... SELECT).
2. Time the dashboard: ``/reports/`` through Django's test client (query,
   figures and template), for the last 30 and the last 90 days; and a scrape
   of ``/metrics``. Goal: each under one second.
3. Export the N audit events as JSONL and as CSV in a separate process and
   print its time and the growth of its peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _django import ROOT, setup

FILL_REQUESTS = """
INSERT INTO approvals_approvalrequest (
    id, agent_id, idempotency_key, body_sha256, action, summary, context, payload, requester,
    callback_url, policy_version_id, rule_name, action_class, levels, on_timeout, fail_open,
    ticket_on_timeout, approvals_required, editable, remind_seconds, calendar, sla_seconds,
    sla_due_at, status, level, owner_role_id, level_started_at, due_at, remind_at,
    claimed_by_id, claimed_at, decided_at, decided_by, decision_reason, decision_payload,
    decision_payload_sha256, decision_edited, decision_seconds, sla_met, audit_seq, audit_head,
    created_at, updated_at)
SELECT
    md5(n::text || 'r')::uuid, %(agent)s, NULL, '-', 'invoice.pay', 'Invoice ' || n,
    jsonb_build_object('invoice', 'INV-' || n, 'amount', (n %% 5000) + 0.5, 'vendor', 'Acme'),
    '{}', '{}', '', %(version)s, 'pay', c.name, %(levels)s::jsonb, 'expire', false, false, 1,
    false, NULL, NULL, c.sla, created + make_interval(secs => c.sla), status, lvl,
    CASE WHEN lvl = 1 THEN %(first)s ELSE %(second)s END, created, NULL, NULL, NULL, NULL,
    created + make_interval(secs => secs), by_,
    '', NULL, '', false, secs, CASE WHEN timed_out THEN false ELSE secs <= c.sla END, 1, '-',
    created, created + make_interval(secs => secs)
FROM (
    SELECT n,
        now() - make_interval(secs => (n::bigint * 7919) %% (%(days)s * 86400)) AS created,
        (n %% 3) AS k,
        CASE WHEN n %% 10 = 0 THEN 2 ELSE 1 END AS lvl,
        n %% 20 = 0 AS timed_out,
        CASE WHEN n %% 20 = 0 THEN 'expired' WHEN n %% 4 = 0 THEN 'denied' ELSE 'approved' END
            AS status,
        CASE WHEN n %% 20 = 0 THEN '{"system": "timeout"}'::jsonb
             ELSE '{"user": "reviewer", "role": "first"}'::jsonb END AS by_,
        ((n::bigint * 104729) %% 20000)::float + 30 AS secs
    FROM generate_series(%(start)s, %(stop)s) AS n
) s
JOIN (VALUES (0, 'customer-urgent', 900), (1, 'internal', 7200), (2, 'compliance', 86400))
    AS c(k, name, sla) ON c.k = s.k
"""

FILL_EVENTS = """
INSERT INTO approvals_auditevent (request_id, seq, kind, at, actor, role, level, policy,
    policy_version, rule, action, summary, context, data, prev_hash, hash)
SELECT id, 1, status, decided_at, decided_by, 'first', level, 'bench', 1, 'pay', action,
    summary, context, '{}', '', md5(id::text) || md5(summary)
FROM approvals_approvalrequest
"""

# The rows the engine keeps as each request ends (approvals.sla.record), built
# here in one pass; the bucket is bisect_left(BUCKETS, seconds), as the engine's.
FILL_ROLLUPS = """
INSERT INTO approvals_decisionstat (day, action_class, role, outcome, timed_out, escalated,
    sla, bucket, count, seconds, escalations)
SELECT (decided_at AT TIME ZONE 'UTC')::date, action_class,
    CASE WHEN level = 1 THEN 'first' ELSE 'second' END, status, decided_by ? 'system',
    level > 1, CASE WHEN sla_met THEN 'met' ELSE 'missed' END,
    (SELECT count(*) FROM unnest(%(edges)s::float8[]) AS e WHERE e < decision_seconds),
    count(*), sum(decision_seconds), sum(level - 1)
FROM approvals_approvalrequest
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""

MEASURE_EXPORT = """
import os, sys, time
sys.path.insert(0, os.getcwd())
import django
django.setup()
from django.db import connection
from approvals.audit_export import Filters, lines
def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
connection.ensure_connection()
before, size, started = peak_kib(), 0, time.perf_counter()
with open(os.devnull, "w") as sink:
    for text in lines(Filters(format=sys.argv[1])):
        sink.write(text)
        size += len(text)
print(time.perf_counter() - started, (peak_kib() - before) / 1024, size / 1e6)
"""


def organisation():
    from django.contrib.auth import get_user_model

    from policies.config import apply_documents

    get_user_model().objects.create_user("reviewer", email="r@example.com")
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    levels = [{"role": "first", "deadline": "30m"}, {"role": "second", "deadline": "2h"}]
    rule = {"name": "pay", "actions": ["invoice.*"], "class": "internal", "levels": levels}
    apply_documents(
        [
            {"kind": "Role", "name": "first", "members": ["reviewer"]},
            {"kind": "Role", "name": "second", "members": ["reviewer"]},
            {"kind": "ActionClass", "name": "customer-urgent", "sla": "15m"},
            {"kind": "ActionClass", "name": "internal", "sla": "2h"},
            {"kind": "ActionClass", "name": "compliance", "sla": "24h"},
            {"kind": "Policy", "name": "bench", "rules": [rule]},
        ],
        author="bench",
    )


def fill(total: int, days: int) -> None:
    import json

    from django.db import connection, transaction

    from approvals.agents import create_agent
    from approvals.sla import BUCKETS
    from policies.models import Policy, Role

    agent = create_agent("bench").agent
    version = Policy.objects.get(name="bench").current_version
    assert version is not None
    params = {
        "agent": agent.pk,
        "version": version.pk,
        "levels": json.dumps(version.spec["rules"][0]["levels"]),
        "first": Role.objects.get(name="first").pk,
        "second": Role.objects.get(name="second").pk,
        "days": days,
    }
    started = time.perf_counter()
    step = 200_000
    for start in range(1, total + 1, step):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                FILL_REQUESTS, {**params, "start": start, "stop": min(start + step - 1, total)}
            )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(FILL_EVENTS)
        edges = [float(e) if e != float("inf") else 1e300 for e in BUCKETS]
        cursor.execute(FILL_ROLLUPS, {"edges": edges})
        cursor.execute("SELECT count(*) FROM approvals_decisionstat")
        (rollup_rows,) = cursor.fetchone()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(
        f"filled {total:,} decided requests, {total:,} audit events and {rollup_rows:,} "
        f"rollup rows in {time.perf_counter() - started:.1f} s"
    )


def time_page(client, path: str, runs: int = 5, **headers) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, **headers)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    setup()
    from django.conf import settings
    from django.test import Client

    organisation()
    fill(args.requests, args.days)

    settings.ALLOWED_HOSTS = ["*"]
    settings.METRICS_TOKEN = "bench"
    client = Client()
    client.login(username="boss", password="pw")
    for label, path in (
        ("/reports/ (last 30 days)", "/reports/"),
        ("/reports/ (last 90 days)", "/reports/?since=2000-01-01"),
        ("/reports/ classes CSV (90 days)", "/reports/?since=2000-01-01&download=classes"),
    ):
        median, worst = time_page(client, path)
        print(f"{label}: median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms (5 runs)")
    median, worst = time_page(Client(), "/metrics", HTTP_AUTHORIZATION="Bearer bench")
    print(f"/metrics scrape: median {median * 1000:.0f} ms, max {worst * 1000:.0f} ms (5 runs)")

    for fmt in ("jsonl", "csv"):
        result = subprocess.run(
            [sys.executable, "-c", MEASURE_EXPORT, fmt],
            cwd=ROOT,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        seconds, grown_mib, megabytes = map(float, result.stdout.split())
        print(
            f"export_audit --format {fmt}: {args.requests:,} events, {megabytes:.0f} MB "
            f"in {seconds:.1f} s ({args.requests / seconds:,.0f} events/s), "
            f"peak memory grew {grown_mib:.1f} MiB"
        )


if __name__ == "__main__":
    main()
