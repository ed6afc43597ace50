"""Limits per agent and per reviewer: a request rate, and a number of concurrent waits.

The counters live where every web process sees them: Redis when ``REDIS_URL`` is
set, else a small SQLite file of their own under ``var/`` (the embedded default
has no Redis; this file is not the application's database, so a limit check
never takes the application's write lock).

Rates are a generic cell rate algorithm (GCRA): one stored "theoretical
arrival time" per key, so ``120/min`` allows a burst of 120 and then one every
half second, and ``Retry-After`` is exact. A wait holds a *slot*: a member of a
sorted set scored by when its lease ends, so a slot whose process died (or whose
release was lost) frees itself when the longest wait could have ended.

If the store cannot be reached the limits fail open, logged: Redis being away
must not stop agents from asking for approvals (the rest of the service is
built to ride out a Redis outage).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol, cast

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from approvals.models import Agent
from approvals.rates import Rate

logger = logging.getLogger(__name__)

# A wait's slot outlives the longest wait by this much before it frees itself.
SLOT_GRACE_SECONDS = 30


@dataclass(frozen=True)
class Slot:
    key: str
    token: str


class Store(Protocol):
    def take(self, key: str, rate: Rate) -> float:
        """Count one call; 0 if allowed, else the seconds until one would be."""

    def hold(self, key: str, limit: int, lease: float) -> tuple[str | None, float]:
        """Take a slot: (token, 0), or (None, seconds until the oldest lease ends)."""

    def release(self, key: str, token: str) -> None: ...


# --- Redis ------------------------------------------------------------------------

TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > burst then
  return tostring(tat - now - burst)
end
local ttl = math.ceil((burst + interval) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', ttl)
return '0'
"""

HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) - now)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return '0'
"""


class RedisStore:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self.client.register_script(TAKE)
        self._hold = self.client.register_script(HOLD)

    def take(self, key: str, rate: Rate) -> float:
        interval = rate.seconds / rate.count
        return float(self._take(keys=[key], args=[interval, rate.seconds - interval]))

    def hold(self, key: str, limit: int, lease: float) -> tuple[str | None, float]:
        token = uuid.uuid4().hex
        retry = float(self._hold(keys=[key], args=[limit, lease, token]))
        return (token, 0.0) if retry == 0 else (None, retry)

    def release(self, key: str, token: str) -> None:
        self.client.zrem(key, token)


# --- the embedded default: a SQLite file of its own ------------------------------------


class FileStore:
    """The same two operations on a SQLite file, atomic across processes
    (``BEGIN IMMEDIATE`` takes the file's write lock for the few microseconds
    each needs)."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS rate (key TEXT PRIMARY KEY, tat REAL)")
            db.execute("CREATE TABLE IF NOT EXISTS slot (key TEXT, token TEXT, until REAL)")
            db.execute("CREATE INDEX IF NOT EXISTS slot_key ON slot (key, until)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def _transaction(self) -> sqlite3.Connection:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        return db

    def take(self, key: str, rate: Rate) -> float:
        interval = rate.seconds / rate.count
        burst = rate.seconds - interval
        db, now = self._transaction(), time.time()
        try:
            row = db.execute("SELECT tat FROM rate WHERE key = ?", (key,)).fetchone()
            tat = max(row[0] if row else now, now)
            if tat - now > burst:
                return tat - now - burst
            db.execute("INSERT OR REPLACE INTO rate VALUES (?, ?)", (key, tat + interval))
            return 0.0
        finally:
            db.execute("COMMIT")

    def hold(self, key: str, limit: int, lease: float) -> tuple[str | None, float]:
        db, now = self._transaction(), time.time()
        try:
            db.execute("DELETE FROM slot WHERE until <= ?", (now,))
            held = db.execute(
                "SELECT count(*), min(until) FROM slot WHERE key = ?", (key,)
            ).fetchone()
            if held[0] >= limit:
                return None, held[1] - now
            token = uuid.uuid4().hex
            db.execute("INSERT INTO slot VALUES (?, ?, ?)", (key, token, now + lease))
            return token, 0.0
        finally:
            db.execute("COMMIT")

    def release(self, key: str, token: str) -> None:
        db = self._transaction()
        try:
            db.execute("DELETE FROM slot WHERE key = ? AND token = ?", (key, token))
        finally:
            db.execute("COMMIT")


_store: Store | None = None
_store_lock = threading.Lock()


def store() -> Store:
    global _store
    with _store_lock:
        if _store is None:
            if settings.REDIS_URL:
                _store = RedisStore(settings.REDIS_URL)
            else:
                _store = FileStore(str(settings.VAR_DIR / "limits.sqlite3"))
        return _store


def _fail_open(what: str, exc: Exception) -> None:
    logger.warning("limits: %s failed (%s); allowing the call", what, exc)


# --- what the API uses ----------------------------------------------------------------


def retry_after(seconds: float) -> int:
    """Whole seconds for ``Retry-After``, never 0 (which would invite a hot loop)."""
    return max(1, math.ceil(seconds))


def agent_rate(agent: Agent) -> Rate:
    return Rate.parse(agent.rate_limit or settings.APPROVALS_AGENT_RATE_LIMIT)


def agent_max_waits(agent: Agent) -> int:
    if agent.max_waits is not None:
        return agent.max_waits
    return settings.APPROVALS_AGENT_MAX_WAITS


def take(key: str, rate: Rate) -> float:
    try:
        return store().take(f"countersign:rate:{key}", rate)
    except Exception as exc:
        _fail_open("rate", exc)
        return 0.0


def hold_wait(agent: Agent, seconds: float) -> Slot | None:
    """Take one of the agent's concurrent-wait slots, or raise ``Throttled``.

    Returns None when the store could not be reached (fail open)."""
    key = f"countersign:waits:{agent.pk}"
    try:
        token, retry = store().hold(key, agent_max_waits(agent), seconds + SLOT_GRACE_SECONDS)
    except Exception as exc:
        _fail_open("wait slot", exc)
        return None
    if token is None:
        raise Throttled(
            wait=retry_after(min(retry, 5)),
            detail=f"Too many concurrent waits (at most {agent_max_waits(agent)} per agent).",
        )
    return Slot(key, token)


def release_wait(slot: Slot | None) -> None:
    if slot is None:
        return
    try:
        store().release(slot.key, slot.token)
    except Exception as exc:
        # The slot frees itself when its lease ends.
        logger.warning("limits: releasing a wait slot failed (%s)", exc)


class _RateThrottle(BaseThrottle):
    """DRF throttle over ``take``; the 429 gets ``Retry-After`` and code
    ``throttled`` from DRF and our exception handler."""

    def key_and_rate(self, request: Request, view: APIView) -> tuple[str, Rate] | None:
        raise NotImplementedError

    def allow_request(self, request: Request, view: APIView) -> bool:
        found = self.key_and_rate(request, view)
        if found is None:
            return True
        self.delay = take(*found)
        return self.delay == 0

    def wait(self) -> float:
        return retry_after(self.delay)


class AgentRateThrottle(_RateThrottle):
    def key_and_rate(self, request: Request, view: APIView) -> tuple[str, Rate] | None:
        agent = cast(Agent, request.auth)  # AgentKeyAuthentication put it there
        if getattr(request._request, "scope", {}).get("countersign.longpoll") == "final":
            return None  # the answer to a wait that was counted when it began
        return f"agent:{agent.pk}", agent_rate(agent)


class ReviewerRateThrottle(_RateThrottle):
    def key_and_rate(self, request: Request, view: APIView) -> tuple[str, Rate] | None:
        if not request.user.is_authenticated:
            return None
        return f"user:{request.user.pk}", Rate.parse(settings.APPROVALS_REVIEWER_RATE_LIMIT)
