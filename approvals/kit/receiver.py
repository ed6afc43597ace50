"""Receive Countersign callbacks: verify them, and act on each event once.

Standard library only, so an agent can import it from this package or copy
this one file. Callbacks follow the Standard Webhooks specification, so any
Standard Webhooks library (Python, Node, Go, ...) verifies them too.

    from approvals.kit.receiver import InvalidCallback, MemoryStore, Receiver

    receiver = Receiver(secret="whsec_...", store=MemoryStore())

    def on_callback(headers, body):            # in your web framework's view
        try:
            outcome = receiver.process(headers, body, resume_run)
        except InvalidCallback:
            return 400                         # forged, tampered or replayed
        return 200                             # also for "duplicate": stop the retries

``resume_run(event)`` runs once per ``webhook-id``, however often the same
event is delivered (retries, a worker that died after sending, a replay).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

DEFAULT_TOLERANCE = 300  # seconds of clock difference accepted, either way


class InvalidCallback(Exception):
    """The callback is not authentic, or not fresh: answer 400 and do nothing."""


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Iterable[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check the signature and timestamp; return the parsed event.

    ``secret`` may be several secrets while you rotate yours. Raises
    InvalidCallback for missing or garbled headers, an old or future
    timestamp (replay), a signature that does not match, or a body that is
    not a JSON object.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (webhook_id and timestamp and signatures):
        raise InvalidCallback("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise InvalidCallback("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if sent_at < current - tolerance:
        raise InvalidCallback("webhook-timestamp is too old (a replay?)")
    if sent_at > current + tolerance:
        raise InvalidCallback("webhook-timestamp is in the future")

    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    signed = f"{webhook_id}.{timestamp}.".encode() + raw
    keys = [_key(s) for s in ([secret] if isinstance(secret, str) else secret)]
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    if not any(
        hmac.compare_digest(candidate, wanted)
        for candidate in _v1_signatures(signatures)
        for wanted in expected
    ):
        raise InvalidCallback("no valid signature")
    try:
        event = json.loads(raw)
    except ValueError:
        raise InvalidCallback("the body is not JSON") from None
    if not isinstance(event, dict):
        raise InvalidCallback("the body is not a JSON object")
    return event


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


# --- acting once --------------------------------------------------------------------


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
    """Uses a Django cache (``cache.add`` is atomic on Redis and Memcached)."""

    def __init__(self, cache: Any = None, prefix: str = "countersign:webhook:") -> None:
        if cache is None:
            from django.core.cache import cache as default_cache

            cache = default_cache
        self.cache, self.prefix = cache, prefix

    def add(self, key: str, ttl: int) -> bool:
        return bool(self.cache.add(self.prefix + key, 1, ttl))

    def discard(self, key: str) -> None:
        self.cache.delete(self.prefix + key)


class Receiver:
    """Verify, then run the handler once per ``webhook-id``.

    ``ttl`` must outlast the sender's retries (about 28 hours by default) and
    any manual redelivery you would still want ignored; a week by default.
    """

    def __init__(
        self,
        secret: str | Iterable[str],
        store: Store,
        *,
        tolerance: int = DEFAULT_TOLERANCE,
        ttl: int = 7 * 24 * 3600,
    ) -> None:
        self.secret = secret if isinstance(secret, str) else list(secret)
        self.store, self.tolerance, self.ttl = store, tolerance, ttl

    def process(
        self,
        headers: Mapping[str, str],
        body: bytes | str,
        handler: Callable[[dict[str, Any]], object],
    ) -> str:
        """Returns "handled" or "duplicate"; raises InvalidCallback for bad ones."""
        event = verify(headers, body, self.secret, tolerance=self.tolerance)
        webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        if not self.store.add(webhook_id, self.ttl):
            return "duplicate"
        try:
            handler(event)
        except BaseException:
            self.store.discard(webhook_id)
            raise
        return "handled"
