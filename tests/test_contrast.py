"""The inbox's colours meet WCAG AA contrast (4.5:1 for text) on their backgrounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parent.parent / "static" / "css" / "app.css").read_text()
VARS = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", CSS))

# (text, background) as the stylesheet pairs them.
PAIRS = [
    ("fg", "bg"), ("muted", "bg"), ("muted", "card"), ("accent", "bg"), ("accent", "card"),
    ("danger", "card"), ("ok", "card"), ("accent-fg", "accent"), ("accent-fg", "danger"),
    ("accent-fg", "ok"), ("soon-fg", "soon-bg"), ("soon-fg", "bg"), ("late-fg", "late-bg"),
]  # fmt: skip


def luminance(colour: str) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


@pytest.mark.parametrize(("text", "background"), PAIRS)
def test_text_is_readable_on_its_background(text, background):
    lighter, darker = sorted([luminance(VARS[text]), luminance(VARS[background])], reverse=True)
    assert (lighter + 0.05) / (darker + 0.05) >= 4.5
