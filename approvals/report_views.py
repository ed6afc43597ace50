"""``/reports/``: the SLA dashboard (staff), and each of its tables as CSV."""

from __future__ import annotations

import csv
from datetime import date, timedelta

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_GET

from approvals import reports

TABLES = {
    "classes": reports.class_table,
    "roles": reports.role_table,
    "trend": reports.trend_table,
}
DEFAULT_DAYS = 30
MAX_DAYS = 366


def _period(request: HttpRequest) -> tuple[date, date, list[str]]:
    """The chosen period (inclusive days, UTC); bad input falls back with a note."""
    today = timezone.now().date()
    until = parse_date(request.GET.get("until") or "") or today
    since = parse_date(request.GET.get("since") or "") or until - timedelta(days=DEFAULT_DAYS - 1)
    notes = []
    if since > until:
        since, until = until, since
    if (until - since).days >= MAX_DAYS:
        since = until - timedelta(days=MAX_DAYS - 1)
        notes.append(f"Periods are at most {MAX_DAYS} days; showing the last {MAX_DAYS}.")
    return since, until, notes


@staff_member_required
@require_GET
def reports_page(request: HttpRequest) -> HttpResponse:
    since, until, notes = _period(request)
    report = reports.build(reports.scope_for(request.user), since, until)
    download = request.GET.get("download")
    if download in TABLES:
        return _csv(TABLES[download](report), f"sla-{download}-{since}-{until}.csv")
    context = {
        "report": report,
        "notes": notes,
        "tables": {name: table(report) for name, table in TABLES.items() if name != "trend"},
        "chart": reports.chart(report.days),
        "since": since,
        "until": until,
    }
    return render(request, "approvals/reports.html", context)


def _csv(table: tuple[list[str], list[list[str]]], filename: str) -> HttpResponse:
    header, rows = table
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows(rows)
    return response
