"""Business time: open hours only, in the calendar's zone, across weekends,
holidays and daylight-saving changes, checked against a minute-by-minute
reference that knows nothing but "is this minute open?"."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.business_hours import DAYS, Calendar, compact_hours, normalize

BERLIN = ZoneInfo("Europe/Berlin")


def office(hours=None, holidays=(), zone="Europe/Berlin") -> Calendar:
    spec, errors = normalize("eu-office", zone, hours or {"mon-fri": "09:00-17:30"}, list(holidays))
    assert errors == []
    return Calendar.from_spec(spec)


def berlin(*args) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def test_a_2h_deadline_raised_friday_1630_falls_due_on_monday_morning():
    friday = berlin(2026, 11, 27, 16, 30)
    # The specification's example said 10:30 for a 09:00-17:30 office (README,
    # "Where the API differs"); one hour is left on Friday there, so it is
    # 10:00. Its 10:30 holds for 09:00-17:00.
    assert office().add(friday, 2 * 3600) == berlin(2026, 11, 30, 10, 0)
    nine_to_five = office({"mon-fri": "09:00-17:00"})
    assert nine_to_five.add(friday, 2 * 3600) == berlin(2026, 11, 30, 10, 30)


def test_a_deadline_raised_at_night_starts_counting_at_the_opening():
    assert office().add(berlin(2026, 11, 25, 22, 0), 1800) == berlin(2026, 11, 26, 9, 30)


def test_holidays_are_skipped():
    calendar = office(holidays=["2026-12-24", "2026-12-25"])
    wednesday = berlin(2026, 12, 23, 17, 0)
    # 30 min on Wednesday, then Thursday and Friday are holidays, then Monday.
    assert calendar.add(wednesday, 3600) == berlin(2026, 12, 28, 9, 30)


def test_several_ranges_a_day():
    calendar = office({"mon-fri": "09:00-12:00, 13:00-17:00"})
    assert calendar.add(berlin(2026, 11, 25, 11, 0), 2 * 3600) == berlin(2026, 11, 25, 14, 0)


def test_open_hours_are_wall_clock_across_the_dst_change():
    # Clocks go back on Sunday 25 October 2026; Friday 17:00 CEST is 15:00
    # UTC, Monday 10:00 CET is 09:00 UTC: still one hour of office time.
    calendar = office()
    friday = berlin(2026, 10, 23, 17, 0)
    due = calendar.add(friday, 3600)
    assert due == berlin(2026, 10, 26, 9, 30)
    assert due.astimezone(UTC) == datetime(2026, 10, 26, 8, 30, tzinfo=UTC)


def test_a_range_across_the_skipped_hour_counts_only_real_time():
    # 29 March 2026: 02:00 jumps to 03:00 in Berlin; 01:00-04:00 is 2 real hours.
    calendar = office({"sun": "01:00-04:00"})
    assert calendar.between(berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 29, 5, 0)) == 7200


def test_a_range_across_the_repeated_hour_counts_it_twice():
    # 25 October 2026: 03:00 goes back to 02:00; 01:00-04:00 is 4 real hours.
    calendar = office({"sun": "01:00-04:00"})
    assert calendar.between(berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 25, 5, 0)) == 4 * 3600


def test_next_open_says_when_a_paused_deadline_resumes():
    calendar = office()
    assert calendar.next_open(berlin(2026, 11, 27, 18, 0)) == berlin(2026, 11, 30, 9, 0)
    assert calendar.next_open(berlin(2026, 11, 27, 10, 0)) == berlin(2026, 11, 27, 10, 0)
    assert not calendar.is_open(berlin(2026, 11, 28, 10, 0))


def test_hours_are_compacted_back_to_day_ranges():
    spec, _ = normalize("x", "UTC", {"mon-fri": "09:00-17:30", "sat": "10:00-12:00"}, [])
    assert compact_hours(spec["hours"]) == {"mon-fri": "09:00-17:30", "sat": "10:00-12:00"}


@pytest.mark.parametrize(
    ("zone", "hours", "error"),
    [
        ("Mars/Olympus", {"mon": "09:00-17:00"}, "not an IANA time zone"),
        ("UTC", {"mon-sun-x": "09:00-17:00"}, "not a day or a day range"),
        ("UTC", {"fri-mon": "09:00-17:00"}, "not a day or a day range"),
        ("UTC", {"mon": "17:00-09:00"}, "start must come before the end"),
        ("UTC", {"mon": "9-5"}, "not a range"),
        ("UTC", {"mon": "09:00-12:00, 11:00-13:00"}, "overlap"),
        ("UTC", {}, "hours must map days"),
    ],
)
def test_malformed_calendars_are_refused(zone, hours, error):
    _, errors = normalize("x", zone, hours, [])
    assert any(error in message for message in errors), errors


# --- property tests against a minute-by-minute reference ----------------------

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
MINUTE = timedelta(minutes=1)


def _open_minute(calendar: Calendar, moment: datetime) -> bool:
    local = moment.astimezone(calendar.zone)
    if local.date() in calendar.holidays:
        return False
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in calendar.hours[local.weekday()])


def _reference_add(calendar: Calendar, start: datetime, minutes: int) -> datetime:
    moment, counted = start, 0
    while counted < minutes:
        if _open_minute(calendar, moment):
            counted += 1
        moment += MINUTE
    return moment


def _reference_between(calendar: Calendar, start: datetime, end: datetime) -> int:
    moment, counted = start, 0
    while moment < end:
        counted += _open_minute(calendar, moment)
        moment += MINUTE
    return counted * 60


@st.composite
def calendars(draw):
    hours = {}
    for day in draw(st.sets(st.sampled_from(DAYS), min_size=3)):
        cuts = sorted(draw(st.sets(st.integers(0, 96), min_size=2, max_size=6)))
        pairs = [(a * 15, b * 15) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]
        ranges = [f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}" for a, b in pairs]
        if ranges:
            hours[day] = ranges
    if not hours:
        hours = {"mon": ["09:00-17:00"]}
    holidays = draw(st.lists(st.dates(date(2026, 3, 20), date(2026, 4, 10)), max_size=4))
    spec, errors = normalize("c", draw(st.sampled_from(ZONES)), hours, holidays)
    assert errors == []
    return Calendar.from_spec(spec)


# Starts around the 2026 changes: Europe (29 Mar), the US (8 Mar), Lord Howe
# (5 Apr, half an hour).
starts = st.datetimes(datetime(2026, 3, 1), datetime(2026, 4, 12)).map(
    lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
)


def _weekly_open_minutes(calendar: Calendar) -> int:
    return sum(end - start for day in calendar.hours for start, end in day)


@settings(max_examples=150, deadline=None)
@given(calendars(), starts, st.integers(1, 3000))
def test_add_matches_the_minute_by_minute_reference(calendar, start, minutes):
    minutes = min(minutes, 2 * _weekly_open_minutes(calendar))
    assert calendar.add(start, minutes * 60) == _reference_add(calendar, start, minutes)


@settings(max_examples=150, deadline=None)
@given(calendars(), starts, st.integers(0, 6 * 1440))
def test_between_matches_the_minute_by_minute_reference(calendar, start, minutes):
    end = start + timedelta(minutes=minutes)
    assert calendar.between(start, end) == _reference_between(calendar, start, end)


@settings(max_examples=100, deadline=None)
@given(calendars(), starts, st.integers(1, 3000))
def test_between_undoes_add(calendar, start, minutes):
    due = calendar.add(start, minutes * 60)
    assert calendar.between(start, due) == minutes * 60
