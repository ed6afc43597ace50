"""Rates like ``120/min``: what an agent's ``rate_limit`` and the rate settings hold."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError

RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = RATE.match(text or "")
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"{text!r} is not a rate like '120/min' (per s, min, h or day).")
        return cls(int(match.group(1)), UNITS[match.group(2)[0]])

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h", 86400: "day"}[self.seconds]
        return f"{self.count}/{unit}"


def validate_rate(text: str) -> None:
    """Model-field validator: empty (use the default) or a rate."""
    if text:
        try:
            Rate.parse(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
