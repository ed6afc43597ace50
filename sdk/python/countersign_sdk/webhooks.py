"""Receive Countersign callbacks (Standard Webhooks): verify them, act on each once.

    from countersign_sdk import Webhook
    webhook = Webhook("whsec_...")                     # several secrets while rotating
    event = webhook.verify(body, headers)              # WebhookVerificationError if forged/stale
    webhook.process(body, headers, resume_run)         # resume_run(event) once per webhook-id

Framework handlers that answer 204 (handled or duplicate) or 400 (not authentic):
``django_view``, ``starlette_endpoint`` (FastAPI and Starlette) and ``flask_view``.
Any Standard Webhooks library verifies these callbacks too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from countersign_sdk.errors import CountersignError
from countersign_sdk.models import ApprovalRequest, WebhookEvent

DEFAULT_TOLERANCE = 300  # seconds of clock difference accepted, either way
DEFAULT_TTL = 7 * 24 * 3600  # remember a webhook-id this long (outlasts the ~28 h of retries)


class WebhookVerificationError(CountersignError):
    """Not authentic or not fresh: answer 400 and do nothing."""


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the signing secret is not whsec_<base64>") from None


def _v1_signatures(header: str) -> list[bytes]:
    """Every well-formed ``v1,<base64>`` signature in the header; garbage is skipped."""
    found = []
    for part in header.split():
        version, _, encoded = part.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` header value for a body (for tests and replayers)."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(
        _key(secret), f"{webhook_id}.{timestamp}.".encode() + raw, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


class Store(Protocol):
    def add(self, key: str, ttl: int) -> bool:
        """Remember ``key``; True if it was new, False if already there."""

    def discard(self, key: str) -> None:
        """Forget ``key`` (the handler failed: let a retry act)."""


class MemoryStore:
    """For one process (tests, single-process agents)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, ttl: int) -> bool:
        now = time.monotonic()
        with self._lock:
            expiry = self._seen.get(key)
            if expiry is not None and expiry > now:
                return False
            self._seen[key] = now + ttl
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            self._seen.pop(key, None)


class RedisStore:
    """Shared by every process of the agent: ``RedisStore(redis.Redis(...))``."""

    def __init__(self, client: Any, prefix: str = "countersign:webhook:") -> None:
        self.client, self.prefix = client, prefix

    def add(self, key: str, ttl: int) -> bool:
        return bool(self.client.set(self.prefix + key, b"1", nx=True, ex=ttl))

    def discard(self, key: str) -> None:
        self.client.delete(self.prefix + key)


class DjangoCacheStore:
    """A Django cache (``cache.add`` is atomic on Redis and Memcached)."""

    def __init__(self, cache: Any = None, prefix: str = "countersign:webhook:") -> None:
        if cache is None:
            from django.core.cache import cache as default_cache

            cache = default_cache
        self.cache, self.prefix = cache, prefix

    def add(self, key: str, ttl: int) -> bool:
        return bool(self.cache.add(self.prefix + key, 1, ttl))

    def discard(self, key: str) -> None:
        self.cache.delete(self.prefix + key)


class Webhook:
    """Verifies callbacks signed with the agent's secret(s); acts once per event."""

    def __init__(
        self,
        secret: str | Iterable[str],
        *,
        store: Store | None = None,
        tolerance: int = DEFAULT_TOLERANCE,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        secrets = [secret] if isinstance(secret, str) else list(secret)
        self._keys = [_key(s) for s in secrets]
        self.store = store if store is not None else MemoryStore()
        self.tolerance, self.ttl = tolerance, ttl

    def verify(
        self, body: bytes | str, headers: Mapping[str, str], *, now: float | None = None
    ) -> WebhookEvent:
        """The verified event; WebhookVerificationError for missing or garbled headers, a
        timestamp outside the tolerance (a replay), a wrong signature, or a body that is
        not a Countersign event."""
        raw, lowered = self._check(body, headers, now)
        try:
            data = json.loads(raw)
        except ValueError:
            raise WebhookVerificationError("the body is not JSON") from None
        if not isinstance(data, dict):
            raise WebhookVerificationError("the body is not a JSON object")
        try:
            request = ApprovalRequest.from_json(data["data"])
            stamp = data.get("timestamp")
            at = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise WebhookVerificationError("the body is not a Countersign event") from None
        return WebhookEvent(
            id=lowered["webhook-id"], type=str(data.get("type")), timestamp=at,
            request=request, raw=data,
        )  # fmt: skip

    def verify_raw(
        self, body: bytes | str, headers: Mapping[str, str], *, now: float | None = None
    ) -> Any:
        """Verify the signature only and return the parsed JSON (any Standard Webhook)."""
        raw, _ = self._check(body, headers, now)
        try:
            return json.loads(raw)
        except ValueError:
            raise WebhookVerificationError("the body is not JSON") from None

    def _check(
        self, body: bytes | str, headers: Mapping[str, str], now: float | None
    ) -> tuple[bytes, dict[str, str]]:
        lowered = {key.lower(): value for key, value in headers.items()}
        webhook_id = lowered.get("webhook-id")
        timestamp = lowered.get("webhook-timestamp")
        signatures = lowered.get("webhook-signature")
        if not (webhook_id and timestamp and signatures):
            raise WebhookVerificationError(
                "missing webhook-id, webhook-timestamp or webhook-signature"
            )
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise WebhookVerificationError("webhook-timestamp is not a number") from None
        current = time.time() if now is None else now
        if sent_at < current - self.tolerance:
            raise WebhookVerificationError("webhook-timestamp is too old (a replay?)")
        if sent_at > current + self.tolerance:
            raise WebhookVerificationError("webhook-timestamp is in the future")
        raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        signed = f"{webhook_id}.{timestamp}.".encode() + raw
        expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in self._keys]
        if not any(
            hmac.compare_digest(candidate, wanted)
            for candidate in _v1_signatures(signatures)
            for wanted in expected
        ):
            raise WebhookVerificationError("no valid signature")
        return raw, lowered

    def process(
        self,
        body: bytes | str,
        headers: Mapping[str, str],
        handler: Callable[[WebhookEvent], object],
    ) -> str:
        """Verify, then run ``handler(event)`` once per webhook-id: "handled" or "duplicate".
        A handler that raises is forgotten, so the sender's retry acts again."""
        event = self.verify(body, headers)
        if not self.store.add(event.id, self.ttl):
            return "duplicate"
        try:
            handler(event)
        except BaseException:
            self.store.discard(event.id)
            raise
        return "handled"

    async def aprocess(
        self,
        body: bytes | str,
        headers: Mapping[str, str],
        handler: Callable[[WebhookEvent], Any],
    ) -> str:
        """``process`` for a handler that may be a coroutine function."""
        event = self.verify(body, headers)
        if not self.store.add(event.id, self.ttl):
            return "duplicate"
        try:
            result = handler(event)
            if inspect.isawaitable(result):
                await result
        except BaseException:
            self.store.discard(event.id)
            raise
        return "handled"


# --- framework handlers: 204 when handled or a duplicate, 400 when not authentic -------


def django_view(webhook: Webhook, handler: Callable[[WebhookEvent], object]) -> Callable:
    """A Django view: ``path("approvals/callback", django_view(webhook, resume))``."""
    from django.http import HttpResponse, HttpResponseNotAllowed
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def view(request: Any) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            webhook.process(request.body, request.headers, handler)
        except WebhookVerificationError as exc:
            return HttpResponse(str(exc), status=400, content_type="text/plain")
        return HttpResponse(status=204)

    return view


def starlette_endpoint(webhook: Webhook, handler: Callable[[WebhookEvent], Any]) -> Callable:
    """An async endpoint for Starlette or FastAPI:
    ``app.add_route("/approvals/callback", starlette_endpoint(webhook, resume), ["POST"])``.
    ``handler`` may be sync (run in a thread) or async."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import PlainTextResponse, Response

    async def call(event: WebhookEvent) -> None:
        if inspect.iscoroutinefunction(handler):
            await handler(event)
        else:
            await run_in_threadpool(handler, event)

    async def endpoint(request: Any) -> Any:
        body = await request.body()
        try:
            await webhook.aprocess(body, request.headers, call)
        except WebhookVerificationError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        return Response(status_code=204)

    return endpoint


def flask_view(webhook: Webhook, handler: Callable[[WebhookEvent], object]) -> Callable:
    """A Flask view: ``app.add_url_rule("/approvals/callback",
    view_func=flask_view(webhook, resume), methods=["POST"])``."""
    from flask import request

    def view() -> Any:
        try:
            webhook.process(request.get_data(), dict(request.headers), handler)
        except WebhookVerificationError as exc:
            return str(exc), 400
        return "", 204

    view.__name__ = f"countersign_webhook_{id(webhook)}"
    return view
