"""JSON parsing that turns every kind of bad body into a 400, never a 500.

Python's ``json`` accepts things PostgreSQL's ``jsonb`` refuses (NaN,
Infinity, ``\\u0000``, lone surrogates) and raises RecursionError on very deep
nesting; each of those would otherwise surface as a server error when saved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class PayloadTooLarge(APIException):
    status_code = 413
    default_code = "too_large"
    default_detail = "The body is too large."


class StrictJSONParser(JSONParser):
    def parse(
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.APPROVALS_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit // 1024} KiB.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("The body is not UTF-8.") from None
        try:
            return loads_strict(text)
        except UnstorableJSON as exc:
            raise ParseError(str(exc)) from None
        except ValueError as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from None


class UnstorableJSON(ValueError):
    """Valid JSON that cannot be stored: too deep, NUL, a lone surrogate, NaN."""


def loads_strict(text: str) -> Any:
    """Parse JSON as the database will store it: the one strict parser, for the
    API's bodies and the browser's edited payloads. Raises ValueError for what
    is not JSON, and its subclass UnstorableJSON for what cannot be stored."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise UnstorableJSON("The JSON is nested too deeply.") from None
    problem = json_problem(value, settings.APPROVALS_MAX_JSON_DEPTH)
    if problem:
        raise UnstorableJSON(problem)
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def json_problem(value: Any, max_depth: int) -> str | None:
    """Describe why a parsed JSON value cannot be stored, or return None."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"The JSON is nested deeper than {max_depth} levels."
        if isinstance(item, dict):
            for key, child in item.items():
                problem = _text_problem(key)
                if problem:
                    return problem
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return "Numbers must be finite."
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "Text may not contain the NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Text may not contain unpaired surrogates."
    return None
