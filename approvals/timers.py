"""Precise timers: wake-ups of the engine at the moments deadlines fall due.

The sweep (every second, from beat) is the guarantee; timers only cut the
lag. A timer is not one request's: it wakes the engine at a moment, and the
engine handles whatever is due then (``escalation.fire``). Deadlines are
rounded up to a ``SLICE`` and a process sets one timer per slice, so 10,000
deadlines in the same second cost 20 timers, not 10,000: the engine's lane
runs every timer it is handed, and after a burst that one sweep ended in
bulk, 10,000 timers with nothing left to do held back every later deadline
for seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.utils import timezone

SLICE = timedelta(milliseconds=50)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEEP = 1000  # slices remembered before the past ones are forgotten

_lock = threading.Lock()
_timed: set[datetime] = set()  # slices this process set a timer for


def wake_at(due_at: datetime) -> datetime:
    """The moment a timer for ``due_at`` goes off: the end of its slice
    (never before the deadline: at that moment the request is due)."""
    slices = -(-(due_at - _EPOCH) // SLICE)  # rounded up, in exact microseconds
    return _EPOCH + slices * SLICE


def untimed(deadlines: Iterable[datetime]) -> list[datetime]:
    """The wake-up moments of ``deadlines`` that this process has set no timer
    for yet, in order; they count as set from now, so call it as the timers
    are handed to the broker (after commit). Other processes may set one for
    the same moment: a second timer costs the engine one small query."""
    moments = sorted({wake_at(due_at) for due_at in deadlines})
    with _lock:
        if len(_timed) > _KEEP:
            now = timezone.now()
            _timed.difference_update([moment for moment in _timed if moment < now])
        fresh = [moment for moment in moments if moment not in _timed]
        _timed.update(fresh)
    return fresh


def forget() -> None:
    """Forget the timers set (tests: another test's clock, another broker)."""
    with _lock:
        _timed.clear()
