"""Durations as people write them in policies: ``90s``, ``30m``, ``1h30m``, ``PT30M``."""

from __future__ import annotations

import re
from datetime import datetime

_COMPACT = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_UNITS = (86400, 3600, 60, 1)


class DurationError(ValueError):
    pass


def parse_duration(text: object) -> int:
    """Return the duration in whole seconds, or raise DurationError."""
    if not isinstance(text, str):
        raise DurationError(f"{text!r} is not a duration; write it like 90s, 30m, 2h or PT30M")
    value = text.strip()
    match = _COMPACT.match(value) or _ISO.match(value.upper())
    if not value or value.upper() in ("P", "PT") or not match or not any(match.groups()):
        raise DurationError(f"{text!r} is not a duration; write it like 90s, 30m, 2h or PT30M")
    if value.upper().endswith("T"):
        raise DurationError(f"{text!r} is not a duration; write it like 90s, 30m, 2h or PT30M")
    return sum(int(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part)


def format_duration(seconds: int) -> str:
    """The compact form, e.g. 5400 -> ``1h30m``, 86400 -> ``24h``; parse_duration's inverse."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, suffix in zip(_UNITS[1:], "hms", strict=True):
        count, seconds = divmod(seconds, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)


def iso_duration(seconds: int) -> str:
    """ISO 8601, as the API shows deadlines: 1800 -> ``PT30M``."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    date = f"{days}D" if days else ""
    if not time and not date:
        return "PT0S"
    return f"P{date}" + (f"T{time}" if time else "")


def iso_instant(moment: datetime | None) -> str | None:
    """An instant as the API writes it: ISO 8601, UTC as ``Z`` (other offsets
    as they are)."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None
