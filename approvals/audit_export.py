"""Exporting the audit trail, oldest first, in constant memory.

Rows come from a server-side cursor (Django's ``iterator()`` on PostgreSQL
declares a named cursor and fetches ``CHUNK`` rows at a time), as tuples, never
model instances, and each is written out before the next chunk is read, so an
export of millions of events holds one chunk in memory whatever its size. The
same generator serves ``manage.py export_audit`` and ``GET /api/v1/audit``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from django.db.models import QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from approvals.models import AuditEvent
from policies.durations import iso_instant

CHUNK = 2000
FORMATS = ("jsonl", "csv")
COLUMNS = [
    "request", "seq", "kind", "at", "actor", "role", "level", "policy", "action", "summary",
    "context", "hash",
]  # fmt: skip
_FIELDS = (
    "request_id", "seq", "kind", "at", "actor", "role", "level", "policy", "policy_version",
    "rule", "action", "summary", "context", "hash",
)  # fmt: skip
_GLOB = re.compile(r"^[A-Za-z0-9_.:*?\[\]!-]{1,100}$")
_ROLE = re.compile(r"^[a-z0-9-]{1,63}$")


class ExportError(ValueError):
    """A bad filter: ``field`` names it, the message says what to write instead."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    role: str | None = None
    format: str = "jsonl"

    @classmethod
    def parse(cls, raw: dict[str, str | None]) -> Filters:
        """From query parameters or command options; raises ExportError."""
        action, role = raw.get("action") or None, raw.get("role") or None
        if action is not None and not _GLOB.match(action):
            raise ExportError("action", "action must be a glob like invoice.* (a-z 0-9 _ . : -)")
        if role is not None and not _ROLE.match(role):
            raise ExportError("role", "role must be a role name like finance-manager")
        fmt = raw.get("format") or "jsonl"
        if fmt not in FORMATS:
            raise ExportError("format", "format must be jsonl or csv")
        return cls(
            since=_moment(raw.get("since"), "since"),
            until=_moment(raw.get("until"), "until"),
            action=action,
            role=role,
            format=fmt,
        )


def _moment(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        moment = datetime(day.year, day.month, day.day) if day else None
    if moment is None:
        raise ExportError(name, f"{name} must be an ISO 8601 time, e.g. 2026-11-01T00:00:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def events(filters: Filters) -> QuerySet:
    """The matching events, oldest first. ``since`` is inclusive, ``until`` not."""
    # The requests' trail; configuration changes (no request) have their own
    # chain and are read in the admin.
    queryset = AuditEvent.objects.filter(request__isnull=False)
    if filters.since:
        queryset = queryset.filter(at__gte=filters.since)
    if filters.until:
        queryset = queryset.filter(at__lt=filters.until)
    if filters.role:
        queryset = queryset.filter(role=filters.role)
    if filters.action:
        # The literal head of the glob narrows in SQL; fnmatch decides the rest.
        head = re.split(r"[*?\[]", filters.action, maxsplit=1)[0]
        if head:
            queryset = queryset.filter(action__startswith=head)
    return queryset.order_by("at", "id")


def rows(filters: Filters) -> Iterator[dict]:
    """Each event as the JSONL object the README describes (the audit export)."""
    glob = filters.action
    tuples = events(filters).values_list(*_FIELDS).iterator(chunk_size=CHUNK)
    for (
        request_id, seq, kind, at, actor, role, level, policy, version, rule, action, summary,
        context, digest,
    ) in tuples:  # fmt: skip
        if glob and not fnmatchcase(action, glob):
            continue
        yield {
            "request": str(request_id),
            "seq": seq,
            "kind": kind,
            "at": iso_instant(at.astimezone(UTC)),
            "actor": actor,
            "role": role,
            "level": level,
            "policy": {"name": policy, "version": version, "rule": rule},
            "action": action,
            "summary": summary,
            "context": context,
            "hash": digest,
        }


def lines(filters: Filters) -> Iterator[str]:
    """The export as text, a line (or a batch of lines) at a time."""
    if filters.format == "csv":
        yield from _csv_lines(filters)
        return
    for row in rows(filters):
        yield json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def _csv_lines(filters: Filters) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for count, row in enumerate(rows(filters), start=1):
        writer.writerow(
            [
                json.dumps(row[column], ensure_ascii=False, separators=(",", ":"))
                if column in ("actor", "policy", "context")
                else row[column]
                for column in COLUMNS
            ]
        )
        if count % 200 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# --- searching the trail by business context (the admin) ---------------------------

_CONTEXT_QUERY = re.compile(r"^\s*context\.([A-Za-z0-9_-]{1,100})\s*=\s*(.+?)\s*$")


def context_filter(query: str) -> dict | None:
    """``context.invoice = INV-1042`` -> ``{"context__contains": {"invoice": "INV-1042"}}``,
    which PostgreSQL answers from the GIN index on ``context``.

    A value that reads as a JSON number or boolean matches as such
    (``context.amount = 1240.0``); anything else matches as text.
    """
    match = _CONTEXT_QUERY.match(query)
    if not match:
        return None
    key, text = match.groups()
    text = text.strip().strip('"')
    value: object = text
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, (int, float, bool)):
        value = parsed
    return {"context__contains": {key: value}}
