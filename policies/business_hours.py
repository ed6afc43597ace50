"""Business time: deadlines that count only a calendar's open hours.

A calendar is a time zone, weekly open hours (several ranges a day allowed)
and holidays. Open hours are wall-clock times in that zone, so "09:00-17:30"
means half past five in Berlin in summer and in winter alike.

The arithmetic works on real elapsed time between instants: an instant is
open when its wall-clock time in the calendar's zone falls in one of its
day's ranges and its date is not a holiday. On the night the clocks go back,
a range that covers the repeated hour therefore counts it twice (it really
passes twice); on the night they go forward, the skipped hour never passes.

Pure Python (zoneinfo), no Django: policies (simulation) and approvals
(deadlines) both use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
# A calendar with open hours finds its next open minute within a few weeks
# even around a long holiday list; this bounds the walk on a bad calendar.
MAX_DAYS = 3 * 366


class CalendarError(ValueError):
    pass


@dataclass(frozen=True)
class Calendar:
    """``hours[weekday]`` (Monday is 0) lists (start, end) minutes after local
    midnight, sorted and not overlapping; ``end`` may be 1440 (24:00)."""

    name: str
    timezone: str
    hours: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # --- the stored form ------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: dict) -> Calendar:
        """From the normalized form (see ``normalize``), as requests pin it."""
        hours = tuple(
            tuple(_parse_range(text) for text in spec["hours"].get(day, [])) for day in DAYS
        )
        holidays = frozenset(date.fromisoformat(d) for d in spec.get("holidays", []))
        return cls(spec["name"], spec["timezone"], hours, holidays)

    def open_intervals(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals in UTC, in order, from the local day of ``start`` on
        (the first may end before ``start``; callers clip)."""
        zone = self.zone
        day = start.astimezone(zone).date() - timedelta(days=1)
        for _ in range(MAX_DAYS):
            if day not in self.holidays:
                yield from _day_intervals(day, self.hours[day.weekday()], zone)
            day += timedelta(days=1)
        raise CalendarError(f"calendar '{self.name}' has no open hours within {MAX_DAYS} days")

    # --- the arithmetic -------------------------------------------------------

    def add(self, start: datetime, seconds: float) -> datetime:
        """The instant ``seconds`` of open time after ``start``.

        A deadline raised while closed starts counting at the next opening; a
        deadline that exhausts exactly at a closing falls due at that closing.
        """
        remaining = timedelta(seconds=seconds)
        start = start.astimezone(UTC)
        for opens, closes in self.open_intervals(start):
            if closes <= start:
                continue
            opens = max(opens, start)
            if opens + remaining <= closes:
                return opens + remaining
            remaining -= closes - opens
        raise AssertionError("unreachable: open_intervals raises first")

    def between(self, start: datetime, end: datetime) -> float:
        """Seconds of open time from ``start`` to ``end`` (0 if end <= start)."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        total = 0.0
        if end <= start:
            return total
        for opens, closes in self.open_intervals(start):
            if opens >= end:
                break
            if closes <= start:
                continue
            total += (min(closes, end) - max(opens, start)).total_seconds()
        return total

    def next_open(self, moment: datetime) -> datetime:
        """``moment`` itself when open, else when the calendar next opens."""
        moment = moment.astimezone(UTC)
        for opens, closes in self.open_intervals(moment):
            if closes > moment:
                return max(opens, moment)
        raise AssertionError("unreachable: open_intervals raises first")

    def is_open(self, moment: datetime) -> bool:
        return self.next_open(moment) == moment.astimezone(UTC)


def _day_intervals(
    day: date, ranges: tuple[tuple[int, int], ...], zone: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """The UTC intervals whose wall-clock time on ``day`` is in ``ranges``.

    On a day when the offset changes, each range is mapped once with the
    offset before the change (clipped to before it) and once with the offset
    after (clipped to after it): exactly the instants whose wall time is in
    range, whatever the gap or the fold does to the local clock.
    """
    if not ranges:
        return
    midnight = datetime(day.year, day.month, day.day)
    # Wide enough to hold every instant whose wall date is ``day`` in any zone.
    window_start = (midnight - timedelta(hours=15)).replace(tzinfo=UTC)
    window_end = (midnight + timedelta(hours=39)).replace(tzinfo=UTC)
    before = _offset(window_start, zone)
    after = _offset(window_end, zone)
    change = _transition(window_start, window_end, zone) if before != after else None
    pieces = []
    variants: list[tuple[timedelta, datetime | None, datetime | None]] = [(before, None, change)]
    if change is not None:
        variants.append((after, change, None))
    for start_minute, end_minute in ranges:
        for offset, low, high in variants:
            opens = (midnight + timedelta(minutes=start_minute) - offset).replace(tzinfo=UTC)
            closes = (midnight + timedelta(minutes=end_minute) - offset).replace(tzinfo=UTC)
            if low is not None:
                opens = max(opens, low)
            if high is not None:
                closes = min(closes, high)
            if opens < closes:
                pieces.append((opens, closes))
    yield from _merged(sorted(pieces))


def _merged(pieces: list[tuple[datetime, datetime]]) -> Iterator[tuple[datetime, datetime]]:
    current: tuple[datetime, datetime] | None = None
    for opens, closes in pieces:
        if current is not None and opens <= current[1]:
            current = (current[0], max(current[1], closes))
            continue
        if current is not None:
            yield current
        current = (opens, closes)
    if current is not None:
        yield current


def _offset(moment: datetime, zone: ZoneInfo) -> timedelta:
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _transition(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (to the second) in (low, high] with ``high``'s offset;
    zones change their offset at most once within the 54 hours we look at."""
    target = _offset(high, zone)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if _offset(middle, zone) == target:
            high = middle
        else:
            low = middle
    return high


# --- the written form -----------------------------------------------------------


def normalize(name: str, timezone: object, hours: object, holidays: object) -> tuple[dict, list]:
    """The normalized calendar (``{"name", "timezone", "hours": {"mon":
    ["09:00-17:30"], …}, "holidays": ["2026-12-24", …]}``) and the errors."""
    errors: list[str] = []
    if not isinstance(timezone, str) or not zone_exists(timezone):
        errors.append(f"timezone {timezone!r} is not an IANA time zone, e.g. Europe/Berlin")
    by_day: dict[str, list[tuple[int, int]]] = {}
    if not isinstance(hours, dict) or not hours:
        errors.append('hours must map days to ranges, e.g. {mon-fri: "09:00-17:30"}')
        hours = {}
    for key, value in hours.items():
        days = _days(key)
        if days is None:
            errors.append(f"hours: {key!r} is not a day or a day range like mon-fri")
            continue
        ranges = _ranges(value, key, errors)
        for day in days:
            by_day.setdefault(day, []).extend(ranges)
    normalized_hours: dict[str, list[str]] = {}
    for day in DAYS:
        ranges = sorted(by_day.get(day, []))
        for (_, end), (start, _) in pairwise(ranges):
            if start < end:
                errors.append(f"hours: the ranges of {day} overlap")
                break
        if ranges:
            normalized_hours[day] = [_format_range(r) for r in ranges]
    if not errors and not normalized_hours:
        errors.append("hours: a calendar needs some open hours")
    if holidays is None:
        holidays = []
    dates: set[str] = set()
    if not isinstance(holidays, list):
        errors.append('holidays must be a list of dates, e.g. ["2026-12-24"]')
        holidays = []
    for item in holidays:
        text = item.isoformat() if isinstance(item, date) else item
        try:
            dates.add(date.fromisoformat(text).isoformat())
        except (TypeError, ValueError):
            errors.append(f"holidays: {item!r} is not a date like 2026-12-24")
    spec = {
        "name": name,
        "timezone": timezone,
        "hours": normalized_hours,
        "holidays": sorted(dates),
    }
    return spec, errors


def compact_hours(hours: dict[str, list[str]]) -> dict[str, str]:
    """Consecutive days with the same ranges as one key: ``{"mon-fri": "09:00-17:30"}``."""
    out: dict[str, str] = {}
    index = 0
    while index < len(DAYS):
        day = DAYS[index]
        if day not in hours:
            index += 1
            continue
        last = index
        while last + 1 < len(DAYS) and hours.get(DAYS[last + 1]) == hours[day]:
            last += 1
        key = day if last == index else f"{day}-{DAYS[last]}"
        out[key] = ", ".join(hours[day])
        index = last + 1
    return out


def _days(key: object) -> list[str] | None:
    if not isinstance(key, str):
        return None
    parts = key.strip().lower().split("-")
    if len(parts) == 1 and parts[0] in DAYS:
        return [parts[0]]
    if len(parts) == 2 and parts[0] in DAYS and parts[1] in DAYS:
        first, last = DAYS.index(parts[0]), DAYS.index(parts[1])
        if first <= last:
            return list(DAYS[first : last + 1])
    return None


def _ranges(value: object, key: str, errors: list[str]) -> list[tuple[int, int]]:
    texts = value if isinstance(value, list) else str(value).split(",")
    ranges = []
    for text in texts:
        try:
            ranges.append(_parse_range(text))
        except CalendarError as exc:
            errors.append(f"hours: {key}: {exc}")
    return ranges


def _parse_range(text: object) -> tuple[int, int]:
    match = _RANGE.match(text) if isinstance(text, str) else None
    if not match:
        raise CalendarError(f"{text!r} is not a range like 09:00-17:30")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or start >= end:
        raise CalendarError(f"{text!r}: the start must come before the end, within 00:00-24:00")
    return start, end


def _format_range(minutes: tuple[int, int]) -> str:
    (h1, m1), (h2, m2) = divmod(minutes[0], 60), divmod(minutes[1], 60)
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"


def zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
