"""``/metrics``: Prometheus text format, computed from the database at scrape time.

Every figure is read from the database when Prometheus scrapes, so any number
of gunicorn and Celery processes agree by construction (no per-process
counters to merge). Each query is cheap: totals come from the rollup table
the engine keeps as requests end (``approvals.sla``), live figures from the
pending requests through their partial indexes.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Min, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from approvals.models import ApprovalRequest, DecisionStat, Delivery, Status
from approvals.sla import BUCKETS

PREFIX = "countersign"


class DatabaseCollector:
    """A prometheus-client collector that asks the database on each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        ended = DecisionStat.objects
        pending = ApprovalRequest.objects.filter(status=Status.PENDING)
        pending_count = pending.count()
        totals = ended.aggregate(n=Sum("count"), escalations=Sum("escalations"))

        created = CounterMetricFamily(
            f"{PREFIX}_requests_created", "Approval requests created (ended + pending)."
        )
        created.add_metric([], (totals["n"] or 0) + pending_count)
        yield created

        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions", "Requests ended, by terminal status.", labels=["outcome"]
        )
        by_outcome = dict(ended.values_list("outcome").annotate(n=Sum("count")))
        for outcome in (Status.APPROVED, Status.DENIED, Status.EXPIRED, Status.CANCELLED):
            decisions.add_metric([str(outcome)], by_outcome.get(outcome, 0))
        yield decisions

        escalations = CounterMetricFamily(
            f"{PREFIX}_escalations", "Escalations to a next level (ended and pending requests)."
        )
        climbing = pending.aggregate(n=Sum(F("level") - 1))["n"] or 0
        escalations.add_metric([], (totals["escalations"] or 0) + climbing)
        yield escalations

        yield self._pending_by_role(pending)
        yield self._deliveries()
        yield self._time_to_decision()
        yield from self._deadlines(pending, now)

    def _pending_by_role(self, pending: QuerySet[ApprovalRequest]) -> Metric:
        gauge = GaugeMetricFamily(
            f"{PREFIX}_pending_requests", "Pending requests by owning role.", labels=["role"]
        )
        rows = pending.values_list("owner_role__name").annotate(n=Count("id"))
        for role, count in rows.order_by("owner_role__name"):
            gauge.add_metric([role], count)
        return gauge

    def _deliveries(self) -> Metric:
        counter = CounterMetricFamily(
            f"{PREFIX}_callback_deliveries",
            "Callback deliveries by result: delivered, dead (gave up), pending (retrying).",
            labels=["result"],
        )
        found = dict(Delivery.objects.values_list("status").annotate(n=Count("id")))
        for state in Delivery.State:
            counter.add_metric([str(state)], found.get(state, 0))
        return counter

    def _time_to_decision(self) -> Metric:
        """Time from creation to a person's decision (open hours under a
        calendar), by class; timeouts and cancellations are not decisions."""
        histogram = HistogramMetricFamily(
            f"{PREFIX}_time_to_decision_seconds",
            "Time to a reviewer's decision, by action class.",
            labels=["class"],
        )
        rows = (
            DecisionStat.objects.filter(timed_out=False)
            .exclude(outcome=Status.CANCELLED)
            .values_list("action_class", "bucket")
            .annotate(n=Sum("count"), s=Sum("seconds"))
        )
        counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        sums: dict[str, float] = defaultdict(float)
        for action_class, bucket, count, seconds in rows:
            counts[action_class][min(bucket, len(BUCKETS) - 1)] += count
            sums[action_class] += seconds
        for action_class in sorted(counts):
            cumulative, buckets = 0, []
            for edge, count in zip(BUCKETS, counts[action_class], strict=True):
                cumulative += count
                buckets.append((floatToGoString(edge), cumulative))
            histogram.add_metric([action_class], buckets, sums[action_class])
        return histogram

    def _deadlines(self, pending: QuerySet[ApprovalRequest], now: datetime) -> Iterator[Metric]:
        oldest_due = pending.aggregate(at=Min("due_at"))["at"]
        lag = GaugeMetricFamily(
            f"{PREFIX}_sweep_lag_seconds",
            "How long the most overdue pending deadline has waited for the engine (0: none).",
        )
        lag.add_metric([], max((now - oldest_due).total_seconds(), 0.0) if oldest_due else 0.0)
        yield lag
        final = GaugeMetricFamily(
            f"{PREFIX}_final_deadline_seconds",
            "Seconds until the nearest final deadline of a pending request at its last level.",
        )
        nearest = _nearest_final_deadline()
        if nearest is not None:
            final.add_metric([], (nearest - now).total_seconds())
        yield final
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_pending_age_seconds", "Age of the oldest pending request."
        )
        created = pending.aggregate(at=Min("created_at"))["at"]
        oldest.add_metric([], (now - created).total_seconds() if created else 0.0)
        yield oldest


def _nearest_final_deadline() -> datetime | None:
    length = "jsonb_array_length" if connection.vendor == "postgresql" else "json_array_length"
    table = ApprovalRequest._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MIN(due_at) FROM {table} WHERE status = %s AND level = {length}(levels)",
            [Status.PENDING],
        )
        row = cursor.fetchone()
    value = row[0] if row else None
    if isinstance(value, str):  # SQLite hands back text
        from django.utils.dateparse import parse_datetime

        value = parse_datetime(value)
    return value


def render() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())  # type: ignore[arg-type]
    return generate_latest(registry)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off")
    offered = request.headers.get("Authorization", "")
    expected = f"Bearer {token}"
    if not hmac.compare_digest(offered.encode(), expected.encode()):
        response = HttpResponse("a bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
