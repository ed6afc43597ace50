"""``GET /api/v1/requests/{id}?wait=N`` without a thread or a database connection.

Why an ASGI layer and not just an async view: under ASGI Django runs every
sync middleware (sessions, CSRF, auth, messages...) through a per-request
thread that lives as long as the request, so an async view behind them still
parks one OS thread per wait. Here the wait happens outside Django:

1. Subscribe to the request's notifications first, so that a decision that
   commits while we look it up is not missed.
2. Run Django for the usual answer (DRF authentication, rate limit, ``wait``
   validation, the 404 for other agents' requests, JSON errors). When the
   request is pending, the view takes one of the agent's wait slots and says
   so in the ASGI scope instead of waiting; we keep its answer in memory.
3. Wait, holding nothing but an ``asyncio.Event``: a ``NOTIFY`` for this
   request (sent by ``transitions.finish`` in the deciding transaction, so it
   arrives at commit), the client going away, or N seconds.
4. Release the slot, run Django once more for the current resource, send it.

Django's own work (steps 2 and 4) goes through a per-process semaphore, so a
thousand waits arriving at once use a few database connections, not a
thousand. One thread per process (``Listener``) holds one ``LISTEN``
connection for all waits. Without PostgreSQL (the embedded SQLite default)
the wait checks the row every half second instead, on a small shared pool of
threads that close their connection after each check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from django.conf import settings
from django.db import connections

from approvals.transitions import TERMINAL_CHANNEL

if TYPE_CHECKING:
    from approvals.api.throttling import Slot

T = TypeVar("T")

logger = logging.getLogger(__name__)

DETAIL = re.compile(r"^/api/v1/requests/([0-9a-fA-F-]{32,36})/?$")
POLL_SECONDS = 0.5  # without notifications (SQLite, or while the listener reconnects)


# --- the one listening connection per process ---------------------------------------


class Listener:
    """A daemon thread that ``LISTEN``s on one connection and calls the wake-up
    functions registered for a request id. Reconnects with backoff; after every
    (re)connect it wakes everyone, since a commit may have slipped by unseen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Callable[[bool], None]]] = defaultdict(set)
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.listening = False

    @staticmethod
    def available() -> bool:
        return "postgresql" in settings.DATABASES["default"]["ENGINE"]

    def subscribe(self, request_id: str, wake: Callable[[bool], None]) -> None:
        """``wake(True)``: the request became terminal; ``wake(False)``: check it."""
        with self._lock:
            self._waiters[request_id].add(wake)
            if self._pid != os.getpid():  # first use in this (possibly forked) process
                self._pid, self.listening = os.getpid(), False
                self._stopping = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, name="countersign-listen", daemon=True
                )
                self._thread.start()

    def unsubscribe(self, request_id: str, wake: Callable[[bool], None]) -> None:
        with self._lock:
            waiters = self._waiters.get(request_id)
            if waiters is not None:
                waiters.discard(wake)
                if not waiters:
                    del self._waiters[request_id]

    def _wake(self, request_id: str | None) -> None:
        with self._lock:
            if request_id is None:
                calls = [(w, False) for ws in self._waiters.values() for w in ws]
            else:
                calls = [(w, True) for w in self._waiters.get(request_id, ())]
        for wake, terminal in calls:
            wake(terminal)

    def _run(self) -> None:
        import psycopg

        params = _connection_params()
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {TERMINAL_CHANNEL}")
                    self.listening, backoff = True, 0.2
                    self._wake(None)
                    pinged = time.monotonic()
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            self._wake(notify.payload)
                        if time.monotonic() - pinged > 15:
                            conn.execute("SELECT 1")  # a dead connection shows itself here
                            pinged = time.monotonic()
            except Exception as exc:
                self.listening = False
                logger.warning("wait listener: %s; reconnecting in %.1fs", exc, backoff)
                self._wake(None)  # waiters poll until we are back
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.listening = False

    def stop(self) -> None:
        """Close the listening connection (the test suite, before dropping its database)."""
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            self._stopping.set()
            thread.join(timeout=5)
        with self._lock:
            self._pid = self._thread = None
            self._stopping = threading.Event()


def _connection_params() -> dict:
    db = connections["default"].settings_dict
    params = {
        "dbname": db["NAME"],
        "user": db["USER"] or None,
        "password": db["PASSWORD"] or None,
        "host": db["HOST"] or None,
        "port": db["PORT"] or None,
        "connect_timeout": 5,
        # Notice a silently dead peer within about a minute.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "application_name": "countersign-waits",
    }
    return {key: value for key, value in params.items() if value is not None}


listener = Listener()


# --- the database work of waits, on a few threads --------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(settings.APPROVALS_WAIT_THREADS, "countersign-wait")
        _pool_pid = os.getpid()
    return _pool


def _closing(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` and close this thread's database connection after it:
    between two checks a wait holds no connection."""
    try:
        return function(*args)
    finally:
        for conn in connections.all(initialized_only=True):
            conn.close()


async def in_pool(function: Callable[..., T], *args: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), _closing, function, *args)


def _still_pending(request_id: str) -> bool:
    from approvals.models import ApprovalRequest, Status

    status = ApprovalRequest.objects.filter(pk=request_id).values_list("status", flat=True)
    return status.first() == Status.PENDING


# --- the ASGI layer --------------------------------------------------------------------

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class LongPoll:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = DETAIL.match(scope.get("path", "")) if scope["type"] == "http" else None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        if match is None or scope["method"] != "GET" or not any(k == "wait" for k, _ in query):
            return await self.app(scope, receive, send)
        await self._long_poll(scope, receive, send, match.group(1), query)

    async def _long_poll(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        query: list[tuple[str, str]],
    ) -> None:
        loop = asyncio.get_running_loop()
        # ``wait=N`` counts from the moment the call arrived: when a crowd of
        # waits queues for Django's first look, the agent still hears back
        # within N seconds (plus the final look), not N after its turn came.
        arrived = loop.time()
        woken = asyncio.Event()
        notified = False
        gone = False

        def wake(terminal: bool) -> None:  # from the listener thread
            def on_loop() -> None:
                nonlocal notified
                notified = notified or terminal
                woken.set()

            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(on_loop)

        async def watch_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass  # a GET's body (if any): not ours to read
            gone = True
            woken.set()

        notifications = Listener.available()
        if notifications:
            listener.subscribe(request_id, wake)
        watcher = asyncio.create_task(watch_disconnect())
        try:
            first = {**scope, "countersign.longpoll": "first"}
            answer = await self._django(first)
            if "countersign.seconds" not in first:
                # Terminal already, an error, or a 429: answered as it is.
                return await _send_all(answer, send)
            slot = first.get("countersign.held")
            try:
                deadline = arrived + first["countersign.seconds"]
                while not gone and not notified:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    polling = not (notifications and listener.listening)
                    try:
                        await asyncio.wait_for(
                            woken.wait(), min(remaining, POLL_SECONDS) if polling else remaining
                        )
                    except TimeoutError:
                        if not polling:
                            break
                    woken.clear()
                    if not gone and not notified and not await in_pool(_still_pending, request_id):
                        break
            finally:
                # Shielded: released even when this task is cancelled (shutdown).
                await asyncio.shield(in_pool(_release, slot))
            if gone:
                return
            final = {
                **scope,
                "countersign.longpoll": "final",
                "query_string": urlencode([(k, v) for k, v in query if k != "wait"]).encode(),
            }
            await _send_all(await self._django(final), send)
        finally:
            if notifications:
                listener.unsubscribe(request_id, wake)
            watcher.cancel()

    async def _django(self, scope: Scope) -> list[dict]:
        """Run Django for one answer, kept in memory. It never sees the client
        go away, so it always finishes (the slot it may take is then ours to free)."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(settings.APPROVALS_WAIT_THREADS)
        messages: list[dict] = []
        body_sent = False

        async def receive() -> dict:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Future()  # never: Django cancels it when the view is done
            raise AssertionError("unreachable")

        async def keep(message: dict) -> None:
            messages.append(message)

        async with gate:
            await self.app(scope, receive, keep)
        return messages


def _release(slot: Slot | None) -> None:
    from approvals.api.throttling import release_wait

    release_wait(slot)


async def _send_all(messages: list[dict], send: Send) -> None:
    for message in messages:
        await send(message)
