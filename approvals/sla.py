"""Whether a request met its class SLA, and the rollups the dashboard and
/metrics read.

Called by ``transitions.finish`` inside the transaction that ends the
request, so the request's figures and the rollup row change together or not
at all: a rolled-back decision never counts.
"""

from __future__ import annotations

import bisect
from datetime import datetime

from django.db import connection

from approvals.models import ApprovalRequest, DecisionStat, Status

# Upper edges (seconds) of the time-to-decision buckets; the last is +Inf.
BUCKETS: tuple[float, ...] = (
    60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400,
    21600, 28800, 43200, 86400, 172800, 604800, float("inf"),
)  # fmt: skip
HUMAN = (Status.APPROVED, Status.DENIED)


def outcome_of(status: str, by: dict) -> str:
    """approved/denied by a person, a timeout (whatever on_timeout said), or cancelled."""
    if status == Status.CANCELLED:
        return "cancelled"
    if status in HUMAN and "user" in by:
        return str(status)
    return "timeout"


def decision_fields(request: ApprovalRequest, status: str, by: dict, now: datetime) -> dict:
    """Time to decision under the request's calendar and whether it met the
    SLA: only a person's decision within the SLA meets it; a timeout misses."""
    seconds = request.elapsed(request.created_at, now)
    outcome = outcome_of(status, by)
    met = None
    if request.sla_seconds and outcome != "cancelled":
        met = outcome in HUMAN and seconds <= request.sla_seconds
    return {"decision_seconds": round(seconds, 3), "sla_met": met}


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(BUCKETS, seconds)


_UPSERT = f"""
    INSERT INTO {DecisionStat._meta.db_table}
        (day, action_class, role, outcome, escalated, sla, bucket, count, seconds)
    VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s)
    ON CONFLICT (day, action_class, role, outcome, escalated, sla, bucket)
    DO UPDATE SET count = {DecisionStat._meta.db_table}.count + 1,
                  seconds = {DecisionStat._meta.db_table}.seconds + EXCLUDED.seconds
"""


def record(request: ApprovalRequest, status: str, by: dict) -> None:
    """Count the ended request in its rollup row (one upsert; concurrent
    decisions on the same row serialize on it only until they commit)."""
    seconds = request.decision_seconds or 0.0
    sla = "" if request.sla_met is None else ("met" if request.sla_met else "missed")
    assert request.decided_at is not None
    with connection.cursor() as cursor:
        cursor.execute(
            _UPSERT,
            [
                request.decided_at.date(),
                request.action_class,
                request.owner_role.name,
                outcome_of(status, by),
                request.level > 1,
                sla,
                bucket_of(seconds),
                seconds,
            ],
        )
