"""The SLA dashboard's figures, from the rollups the engine keeps.

Totals over a period sum ``DecisionStat`` rows (one per day, class, role,
outcome and time bucket: thousands of rows for millions of requests); live
figures (open load, overdue) count pending requests through their indexes.
No page view scans the requests that ended.

Percentiles come from the time buckets: a p90 of "≤ 45m" means the 90th
percentile decision came within the bucket that ends at 45 minutes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from approvals.models import ApprovalRequest, DecisionStat, Status
from approvals.sla import BUCKETS
from policies.durations import format_duration
from policies.models import ActionClass, AnyUser, Policy, Role


@dataclass(frozen=True)
class Scope:
    """What a staff user may see: classes and roles (None: everything)."""

    classes: frozenset[str] | None
    roles: frozenset[str] | None

    def stats(self, queryset: QuerySet) -> QuerySet:
        if self.classes is not None:
            queryset = queryset.filter(action_class__in=self.classes)
        return queryset


def scope_for(user: AnyUser) -> Scope:
    """Superusers see everything. Other staff see the classes and roles named
    by the policies they may view or change, and the roles they act for."""
    if user.is_superuser:
        return Scope(None, None)
    policies = get_objects_for_user(
        user,
        ["policies.view_policy", "policies.change_policy"],
        Policy.objects.select_related("current_version"),
        any_perm=True,
    )
    classes: set[str] = set()
    roles = set(Role.objects.for_user(user).values_list("name", flat=True))
    for policy in policies:
        if policy.current_version is None:
            continue
        for rule in policy.current_version.spec["rules"]:
            classes.add(rule["class"])
            roles.update(level["role"] for level in rule["levels"])
    return Scope(frozenset(classes), frozenset(roles))


@dataclass
class Buckets:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    def add(self, bucket: int, count: int) -> None:
        self.counts[min(bucket, len(BUCKETS) - 1)] += count

    @property
    def total(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the q-th decision (nearest rank)."""
        if not self.total:
            return None
        rank, seen = max(1, math.ceil(q * self.total)), 0
        for edge, count in zip(BUCKETS, self.counts, strict=True):
            seen += count
            if seen >= rank:
                return edge
        return BUCKETS[-1]


@dataclass
class ClassRow:
    name: str
    sla: int | None = None
    ended: int = 0  # approved, denied or expired, by a person or the timeout
    met: int = 0
    missed: int = 0
    escalated: int = 0
    timed_out: int = 0
    late: int = 0  # a person decided, after the SLA
    times: Buckets = field(default_factory=Buckets)

    @property
    def within_sla(self) -> float | None:
        judged = self.met + self.missed
        return self.met / judged if judged else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.ended if self.ended else None

    @property
    def expiry_rate(self) -> float | None:
        return self.timed_out / self.ended if self.ended else None

    @property
    def p50(self) -> float | None:
        return self.times.quantile(0.5)

    @property
    def p90(self) -> float | None:
        return self.times.quantile(0.9)


@dataclass
class RoleRow:
    name: str
    open: int = 0
    overdue: int = 0  # pending past its SLA target
    decided: int = 0
    times: Buckets = field(default_factory=Buckets)

    @property
    def median(self) -> float | None:
        return self.times.quantile(0.5)


@dataclass
class Day:
    day: date
    ended: int = 0
    met: int = 0
    missed: int = 0

    @property
    def within_sla(self) -> float | None:
        judged = self.met + self.missed
        return self.met / judged if judged else None


@dataclass
class Report:
    since: date
    until: date  # inclusive
    classes: list[ClassRow]
    roles: list[RoleRow]
    days: list[Day]


def build(scope: Scope, since: date, until: date, now: datetime | None = None) -> Report:
    now = now or timezone.now()
    stats = scope.stats(DecisionStat.objects.filter(day__gte=since, day__lte=until))
    stats = stats.exclude(outcome=Status.CANCELLED)
    rows = stats.values_list("action_class", "role", "timed_out", "escalated", "sla", "bucket")
    rows = rows.annotate(n=Sum("count"))
    classes: dict[str, ClassRow] = {}
    roles: dict[str, RoleRow] = {}
    for action_class, role, timed_out, escalated, sla, bucket, count in rows:
        row = classes.setdefault(action_class, ClassRow(action_class))
        row.ended += count
        row.met += count if sla == "met" else 0
        row.missed += count if sla == "missed" else 0
        row.escalated += count if escalated else 0
        row.timed_out += count if timed_out else 0
        if not timed_out:
            row.late += count if sla == "missed" else 0
            row.times.add(bucket, count)
            if scope.roles is None or role in scope.roles:
                role_row = roles.setdefault(role, RoleRow(role))
                role_row.decided += count
                role_row.times.add(bucket, count)
    _live_load(scope, roles, now)
    slas = dict(ActionClass.objects.values_list("name", "sla_seconds"))
    for row in classes.values():
        row.sla = slas.get(row.name)
    return Report(
        since=since,
        until=until,
        classes=sorted(classes.values(), key=lambda r: r.name),
        roles=sorted(roles.values(), key=lambda r: r.name),
        days=_days(stats, since, until),
    )


def _live_load(scope: Scope, roles: dict[str, RoleRow], now: datetime) -> None:
    pending = ApprovalRequest.objects.filter(status=Status.PENDING)
    if scope.classes is not None:
        pending = pending.filter(action_class__in=scope.classes)
    counts = pending.values_list("owner_role__name").annotate(
        n=Count("id"), late=Count("id", filter=Q(sla_due_at__lt=now))
    )
    for role, count, overdue in counts:
        if scope.roles is not None and role not in scope.roles:
            continue
        row = roles.setdefault(role, RoleRow(role))
        row.open, row.overdue = count, overdue


def _days(stats: QuerySet, since: date, until: date) -> list[Day]:
    found: dict[date, Day] = {}
    for day, sla, count in stats.values_list("day", "sla").annotate(n=Sum("count")):
        entry = found.setdefault(day, Day(day))
        entry.ended += count
        entry.met += count if sla == "met" else 0
        entry.missed += count if sla == "missed" else 0
    span = (until - since).days + 1
    return [
        found.get(since + timedelta(days=n), Day(since + timedelta(days=n))) for n in range(span)
    ]


# --- presentation helpers -----------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return f"> {format_duration(int(BUCKETS[-2]))}"
    return f"≤ {format_duration(int(seconds))}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def class_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = [
        "class", "SLA", "ended", "within SLA", "p50", "p90", "escalation rate", "expiry rate",
        "late decisions",
    ]  # fmt: skip
    rows = [
        [
            row.name,
            format_duration(row.sla) if row.sla else "-",
            str(row.ended),
            percent(row.within_sla),
            duration(row.p50),
            duration(row.p90),
            percent(row.escalation_rate),
            percent(row.expiry_rate),
            str(row.late),
        ]
        for row in report.classes
    ]
    return header, rows


def role_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["role", "open", "overdue", "decided", "median time to decision"]
    rows = [
        [row.name, str(row.open), str(row.overdue), str(row.decided), duration(row.median)]
        for row in report.roles
    ]
    return header, rows


def trend_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["day", "ended", "within SLA"]
    rows = [[d.day.isoformat(), str(d.ended), percent(d.within_sla)] for d in report.days]
    return header, rows


@dataclass(frozen=True)
class Chart:
    """A server-rendered SVG bar chart: bars and labels in SVG coordinates."""

    width: int
    height: int
    bars: list[tuple[float, float, float, float, str]]  # x, y, w, h, title
    ticks: list[tuple[float, str]]  # x, label
    top: str
    line: str = ""  # an SVG polyline's points, for a share over the bars


def chart(days: Iterable[Day], width: int = 720, height: int = 180) -> Chart:
    days = list(days)
    plot = height - 24
    most = max((d.ended for d in days), default=0) or 1
    step = width / max(len(days), 1)
    bars, ticks, points = [], [], []
    for index, d in enumerate(days):
        h = plot * d.ended / most
        x = index * step
        title = f"{d.day}: {d.ended} ended, {percent(d.within_sla)} within SLA"
        bars.append(
            (round(x + 1, 1), round(plot - h, 1), round(max(step - 2, 1), 1), round(h, 1), title)
        )
        if d.within_sla is not None:
            points.append(f"{round(x + step / 2, 1)},{round(plot - plot * d.within_sla, 1)}")
        if len(days) <= 14 or index % max(len(days) // 7, 1) == 0:
            # Kept inside the drawing, or the edge labels would be cut in half.
            ticks.append(
                (round(min(max(x + step / 2, 24), width - 24), 1), d.day.strftime("%d %b"))
            )
    return Chart(width, height, bars, ticks, str(most), " ".join(points))
