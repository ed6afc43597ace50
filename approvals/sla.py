"""Whether a request met its class SLA, and the rollups the dashboard and
/metrics read.

Called by ``transitions.finish`` inside the transaction that ends the
request, so the request's figures and the rollup row change together or not
at all: a rolled-back decision never counts.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db import connection

from approvals.models import ApprovalRequest, DecisionStat, Status

# Upper edges (seconds) of the time-to-decision buckets; the last is +Inf.
BUCKETS: tuple[float, ...] = (
    60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400,
    21600, 28800, 43200, 86400, 172800, 604800, float("inf"),
)  # fmt: skip
HUMAN = (Status.APPROVED, Status.DENIED)


def timed_out(status: str, by: dict) -> bool:
    """Ended by the rule's on_timeout (expire, deny or approve), not by a person."""
    return status != Status.CANCELLED and "system" in by


def decision_fields(request: ApprovalRequest, status: str, by: dict, now: datetime) -> dict:
    """Time to decision under the request's calendar and whether it met the
    SLA: only a person's decision within the SLA meets it; a timeout misses."""
    seconds = request.elapsed(request.created_at, now)
    met = None
    if request.sla_seconds and status != Status.CANCELLED:
        met = not timed_out(status, by) and seconds <= request.sla_seconds
    return {"decision_seconds": round(seconds, 3), "sla_met": met}


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(BUCKETS, seconds)


TABLE = DecisionStat._meta.db_table
KEY = "day, action_class, role, outcome, timed_out, escalated, sla, bucket"
_UPSERT = f"""
    INSERT INTO {TABLE} ({KEY}, count, seconds, escalations)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT ({KEY})
    DO UPDATE SET count = {TABLE}.count + EXCLUDED.count,
                  seconds = {TABLE}.seconds + EXCLUDED.seconds,
                  escalations = {TABLE}.escalations + EXCLUDED.escalations
"""


def stat_key(request: ApprovalRequest, status: str, by: dict) -> list:
    sla = "" if request.sla_met is None else ("met" if request.sla_met else "missed")
    assert request.decided_at is not None
    return [
        request.decided_at.date(),
        request.action_class,
        request.owner_role.name,
        str(status),
        timed_out(status, by),
        request.level > 1,
        sla,
        bucket_of(request.decision_seconds or 0.0),
    ]


def record(request: ApprovalRequest, status: str, by: dict) -> None:
    """Count the ended request in its rollup row: one upsert. Concurrent
    decisions that fall in the same row serialize on it until they commit.

    Inside ``deferred()`` the upsert waits for the end of the block instead."""
    key = stat_key(request, status, by)
    seconds, escalations = request.decision_seconds or 0.0, request.level - 1
    if _pending.rows is not None:
        _pending.rows.append((key, seconds, escalations))
        return
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [*key, 1, seconds, escalations])


class _Pending(threading.local):
    rows: list[tuple[list, float, int]] | None = None


_pending = _Pending()


@contextmanager
def deferred() -> Iterator[None]:
    """Within one transaction that ends many requests (a sweep's chunk): write
    their rollups at the end of the block, one upsert per row of the rollup,
    in key order. A rollup row is then locked only once the transaction
    has changed all its requests, so it never waits for a request row while
    holding a rollup row that a decision on that request waits for (a
    deadlock PostgreSQL would break by failing one of them). Leave the block
    inside the transaction; a block that raises writes nothing."""
    _pending.rows = []
    try:
        yield
        rows, _pending.rows = _pending.rows, None
        totals: dict[tuple, list] = {}
        for key, seconds, escalations in rows:
            total = totals.setdefault(tuple(key), [0, 0.0, 0])
            total[0] += 1
            total[1] += seconds
            total[2] += escalations
        with connection.cursor() as cursor:
            for ordered in sorted(totals, key=repr):
                cursor.execute(_UPSERT, [*ordered, *totals[ordered]])
    finally:
        _pending.rows = None


def forget_since(mark: int) -> None:
    """A row of a ``deferred()`` block rolled back to its savepoint: drop the
    rollups it added after ``mark`` (``pending_count()`` before it)."""
    if _pending.rows is not None:
        del _pending.rows[mark:]


def pending_count() -> int:
    return len(_pending.rows) if _pending.rows is not None else 0
