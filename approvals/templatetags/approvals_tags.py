"""Rendering business context for people: readable fields, not JSON."""

from __future__ import annotations

import difflib
import json
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from policies.durations import format_duration

register = template.Library()

FOLD_AT = 160  # characters; longer text is folded behind a "show all"


@register.simple_tag
def fields(value: Any) -> SafeString:
    """Nested objects as definition lists, lists as lists, long text folded."""
    if isinstance(value, dict):
        if not value:
            return mark_safe('<span class="muted">(none)</span>')
        items = format_html_join(
            "", "<div><dt>{}</dt><dd>{}</dd></div>", ((key, fields(v)) for key, v in value.items())
        )
        return format_html('<dl class="fields">{}</dl>', items)
    if isinstance(value, list):
        if not value:
            return mark_safe('<span class="muted">(empty list)</span>')
        return format_html(
            '<ol class="list">{}</ol>',
            format_html_join("", "<li>{}</li>", ((fields(v),) for v in value)),
        )
    text = _scalar(value)
    if len(text) > FOLD_AT:
        return format_html(
            "<details><summary>{}…</summary><span class=\"long\">{}</span></details>",
            text[:FOLD_AT], text,
        )  # fmt: skip
    return format_html("{}", text)


@register.filter
def key_facts(context: dict, limit: int = 3) -> list[tuple[str, str]]:
    """The first few plain facts (amount, customer…) for a queue row."""
    facts = []
    for key, value in (context or {}).items():
        if isinstance(value, (dict, list)):
            continue
        text = _scalar(value)
        facts.append((key, text if len(text) <= 40 else text[:39] + "…"))
        if len(facts) == limit:
            break
    return facts


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# difflib's time grows about quadratically (1.5 s at 28 KiB): past this size
# the diff is by top-level key instead, which costs one comparison per key.
DIFF_MAX_CHARS = 8 * 1024


@register.simple_tag
def payload_diff(original: Any, changed: Any) -> SafeString:
    """What a reviewer changed in the payload, line by line (by key when large)."""
    before_text, after_text = pretty_json(original), pretty_json(changed)
    if len(before_text) + len(after_text) > DIFF_MAX_CHARS:
        return _key_diff(original, changed)
    before = before_text.splitlines()
    after = after_text.splitlines()
    lines = []
    for line in difflib.unified_diff(before, after, "as requested", "as approved", lineterm=""):
        kind = {"+": "added", "-": "removed", "@": "hunk"}.get(line[:1], "same")
        if line.startswith(("+++", "---")):
            kind = "file"
        lines.append(format_html('<span class="diff-{}">{}</span>', kind, line))
    return format_html('<pre class="diff">{}</pre>', mark_safe("\n".join(lines)))


def _key_diff(original: Any, changed: Any) -> SafeString:
    if not isinstance(original, dict) or not isinstance(changed, dict):
        return format_html('<p class="diff">The whole payload was replaced.</p>')
    rows = []
    for key in sorted(set(original) | set(changed)):
        if key not in original:
            rows.append(("added", key))
        elif key not in changed:
            rows.append(("removed", key))
        elif original[key] != changed[key]:
            rows.append(("changed", key))
    items = format_html_join(
        "\n", '<li class="diff-{}">{} {}</li>', ((kind, kind, key) for kind, key in rows)
    )
    return format_html(
        '<p class="muted">Too large to compare line by line; by top-level key:</p>'
        '<ul class="diff">{}</ul>',
        items,
    )


@register.filter
def actor_name(actor: dict) -> str:
    if not actor:
        return ""
    if "user" in actor:
        return actor["user"]
    if "agent" in actor:
        return f"agent {actor['agent']}"
    return f"system ({actor.get('system', '')})"


def _scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@register.filter
def duration(seconds: int) -> str:
    return format_duration(int(seconds))


@register.filter
def words(kind: str) -> str:
    """``late_decision`` -> ``late decision``."""
    return kind.replace("_", " ")
