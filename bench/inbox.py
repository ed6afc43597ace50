"""The reviewer's inbox and request page with a deep queue.

    .venv/bin/python bench/inbox.py [--pending N] [--runs R]

1. Fill PostgreSQL, with bulk SQL, with N pending requests (default 10,000)
   owned by one reviewer's two roles (a fifth of them escalated to the second
   role), twice as many pending for a role the reviewer does not hold, and
   50,000 decided requests (half the reviewer's), each with its ownership rows
   and a `created` audit event; plus one pending request of the reviewer's
   with 500 audit events.
2. Time, through Django's test client (server time: URL routing, middleware,
   queries, template), R runs each (default 50) after a warm-up: the inbox
   page, its htmx polling fragment, and the request page of the request with
   500 events. Print p50/p99 and the number of queries of each.

Goal (issue 12): each at most 50 ms, with a query count that does not grow
with the queue (tests/test_request_page.py asserts that part).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _django import percentiles, setup

DECIDED = 50_000
EVENTS = 500
GOAL_MS = 50

COLUMNS = """
    id, agent_id, idempotency_key, body_sha256, action, summary, context, payload, requester,
    callback_url, policy_version_id, rule_name, action_class, levels, on_timeout, fail_open,
    ticket_on_timeout, approvals_required, editable, remind_seconds, calendar, sla_seconds,
    sla_due_at, status, level, owner_role_id, level_started_at, due_at, remind_at,
    claimed_by_id, claimed_at, decided_at, decided_by, decision_reason, decision_payload,
    decision_payload_sha256, decision_edited, decision_seconds, sla_met, audit_seq, audit_head,
    created_at, updated_at"""

# n: the row number; lvl 2 rows escalated from the first role to the second.
FILL_REQUESTS = f"""
INSERT INTO approvals_approvalrequest ({COLUMNS})
SELECT
    md5(%(tag)s || n::text)::uuid, %(agent)s, NULL, '-', %(action)s, 'Invoice ' || n || ' is over',
    jsonb_build_object('invoice', 'INV-' || n, 'amount', (n %% 5000) + 0.5, 'currency', 'USD',
                       'vendor', 'Acme ' || (n %% 97), 'po', 'PO-' || (n %% 300)),
    jsonb_build_object('invoice', 'INV-' || n, 'pay', (n %% 5000) + 0.5), '{{}}', '',
    %(version)s, 'pay', %(class)s, %(levels)s::jsonb, 'expire', false, false, 1, false, NULL,
    NULL, 7200, created + interval '2 hours', %(status)s, lvl,
    CASE WHEN lvl = 1 THEN %(first)s ELSE %(second)s END, created,
    CASE WHEN %(status)s = 'pending'
         THEN now() + make_interval(secs => (n::bigint * 7919) %% 3600) END,
    NULL, NULL, NULL,
    CASE WHEN %(status)s = 'pending' THEN NULL ELSE created + interval '10 minutes' END,
    CASE WHEN %(status)s = 'pending' THEN NULL
         ELSE jsonb_build_object('user', 'someone', 'role', 'first') END,
    '', NULL, '', false, NULL, NULL, 1, '-', created, created
FROM (
    SELECT n, CASE WHEN n %% 5 = 0 THEN 2 ELSE 1 END AS lvl,
           now() - make_interval(secs => (n::bigint * 104729) %% (30 * 86400)) AS created
    FROM generate_series(1, %(count)s) AS n
) s
"""

FILL_OWNERSHIP = """
INSERT INTO approvals_ownership (request_id, role_id, level)
SELECT r.id, CASE WHEN l = 1 THEN %(first)s ELSE %(second)s END, l
FROM approvals_approvalrequest r, generate_series(1, 2) AS l
WHERE l <= r.level AND r.action = %(action)s
"""

FILL_CREATED_EVENTS = """
INSERT INTO approvals_auditevent (request_id, seq, kind, at, actor, role, level, policy,
    policy_version, rule, action, summary, context, data, prev_hash, hash)
SELECT id, 1, 'created', created_at, '{"agent": "bench"}', 'first', 1, 'bench', 1, 'pay',
    action, summary, context, '{}', '', md5(id::text) || md5(summary)
FROM approvals_approvalrequest
"""

# The request with a long history: claims and reminders, 500 events in all.
FILL_LONG_HISTORY = """
INSERT INTO approvals_auditevent (request_id, seq, kind, at, actor, role, level, policy,
    policy_version, rule, action, summary, context, data, prev_hash, hash)
SELECT %(id)s, seq, CASE WHEN seq %% 2 = 0 THEN 'claimed' ELSE 'unclaimed' END,
    now() - make_interval(secs => 600 - seq), '{"user": "reviewer"}', 'first', 1, 'bench', 1,
    'pay', action, summary, context,
    CASE WHEN seq %% 10 = 1 THEN '{"reason": "handing over"}'::jsonb ELSE '{}'::jsonb END,
    md5((seq - 1)::text), md5(seq::text) || md5(seq::text)
FROM approvals_approvalrequest, generate_series(2, %(events)s) AS seq
WHERE id = %(id)s
"""


def organisation():
    """The reviewer in `first` and `second`; `other` is someone else's role."""
    from django.contrib.auth import get_user_model

    from policies.config import apply_documents

    user_model = get_user_model()
    reviewer = user_model.objects.create_user("reviewer", email="r@example.com")
    user_model.objects.create_user("someone", email="s@example.com")
    levels = [{"role": "first", "deadline": "1h"}, {"role": "second", "deadline": "1h"}]
    others = [{"role": "other", "deadline": "1h"}, {"role": "other-boss", "deadline": "1h"}]
    apply_documents(
        [
            {"kind": "Role", "name": "first", "members": ["reviewer"]},
            {"kind": "Role", "name": "second", "members": ["reviewer"]},
            {"kind": "Role", "name": "other", "members": ["someone"]},
            {"kind": "Role", "name": "other-boss", "members": ["someone"]},
            {"kind": "ActionClass", "name": "internal", "sla": "2h"},
            {"kind": "ActionClass", "name": "customer-urgent", "sla": "15m"},
            {"kind": "Policy", "name": "bench", "rules": [
                {"name": "pay", "actions": ["invoice.*"], "class": "internal", "levels": levels},
                {"name": "refund", "actions": ["refund.*"], "class": "customer-urgent",
                 "levels": others},
            ]},
        ],
        author="bench",
    )  # fmt: skip
    return reviewer


def fill(pending: int) -> str:
    """Fill the tables; return the id of the request with 500 events."""
    from django.db import connection, transaction

    from approvals.agents import create_agent
    from policies.models import Policy, Role

    agent = create_agent("bench").agent
    version = Policy.objects.get(name="bench").current_version
    assert version is not None
    roles = dict(Role.objects.values_list("name", "pk"))
    started = time.perf_counter()
    batches = [
        # (tag, count, status, action, class, first role, second role)
        ("mine", pending, "pending", "invoice.pay", "internal", "first", "second"),
        ("theirs", 2 * pending, "pending", "refund.issue", "customer-urgent", "other",
         "other-boss"),
        ("mine-done", DECIDED // 2, "approved", "invoice.paid", "internal", "first", "second"),
        ("theirs-done", DECIDED // 2, "denied", "refund.done", "customer-urgent", "other",
         "other-boss"),
    ]  # fmt: skip
    with transaction.atomic(), connection.cursor() as cursor:
        for tag, count, status, action, klass, first, second in batches:
            rule = version.spec["rules"][0 if first == "first" else 1]
            params = {
                "tag": tag, "agent": agent.pk, "version": version.pk, "count": count,
                "status": status, "action": action, "class": klass,
                "levels": json.dumps(rule["levels"]), "first": roles[first],
                "second": roles[second],
            }  # fmt: skip
            cursor.execute(FILL_REQUESTS, params)
            cursor.execute(FILL_OWNERSHIP, params)
        cursor.execute(FILL_CREATED_EVENTS)
        cursor.execute(
            "SELECT id FROM approvals_approvalrequest WHERE action = 'invoice.pay' AND level = 1 "
            "ORDER BY due_at LIMIT 1"
        )
        (long_id,) = cursor.fetchone()
        cursor.execute(FILL_LONG_HISTORY, {"id": long_id, "events": EVENTS})
        cursor.execute(
            "UPDATE approvals_approvalrequest SET audit_seq = %s WHERE id = %s", (EVENTS, long_id)
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    total = 3 * pending + DECIDED
    print(
        f"filled {total:,} requests ({pending:,} pending for the reviewer's two roles, "
        f"{2 * pending:,} pending for others, {DECIDED:,} decided) and one request with "
        f"{EVENTS} audit events in {time.perf_counter() - started:.1f} s"
    )
    return str(long_id)


def measure(client, label: str, path: str, runs: int, verbose: bool, **headers) -> None:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):  # warm-up: template loading, caches
        assert client.get(path, **headers).status_code == 200
    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, **headers)
    assert response.status_code == 200, response.status_code
    # Read them now: the next request clears the connection's log.
    captured = queries.captured_queries
    slowest = max(float(query["time"]) for query in captured)
    if verbose:
        for query in captured:
            print(f"  {float(query['time']) * 1000:5.1f} ms  {query['sql'][:300]}")
    samples, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        client.get(path, **headers)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    stats = percentiles(samples)
    verdict = "ok" if stats["p50"] <= GOAL_MS else "OVER"
    # The web process's own CPU time (Python: ORM, template) varies less with
    # the machine's load than the wall clock, which includes PostgreSQL's time.
    print(
        f"{label}: p50 {stats['p50']:.1f} ms, p99 {stats['p99']:.1f} ms "
        f"(CPU p50 {statistics.median(cpu):.1f} ms), {len(captured)} queries "
        f"(slowest {slowest * 1000:.0f} ms) [goal: {GOAL_MS} ms: {verdict}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each page's SQL")
    args = parser.parse_args()
    setup()
    from django.conf import settings
    from django.test import Client

    reviewer = organisation()
    long_id = fill(args.pending)
    settings.ALLOWED_HOSTS = ["*"]
    client = Client()
    client.force_login(reviewer)
    runs, verbose = args.runs, args.verbose
    for label, path, headers in (
        ("inbox page /", "/", {}),
        ("inbox polling fragment (htmx)", "/", {"HTTP_HX_REQUEST": "true"}),
        ("inbox page 3", "/?page=3", {}),
        ("inbox filtered by role and class", "/?role=second&class=internal", {}),
        ("inbox, recent decisions (25,000 the reviewer's roles owned)", "/?tab=decided", {}),
        (f"request page, {EVENTS} audit events", f"/requests/{long_id}", {}),
        ("request page's polling fragment (htmx)", f"/requests/{long_id}?partial=panel",
         {"HTTP_HX_REQUEST": "true"}),
    ):  # fmt: skip
        measure(client, label, path, runs, verbose, **headers)


if __name__ == "__main__":
    main()
