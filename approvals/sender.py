"""Many callback attempts at once, on one asyncio loop per process.

The same rules as ``approvals.outbound.post`` (which Slack still uses), for
attempts that run side by side instead of one per thread:

- A wall-clock bound for the whole attempt (``asyncio.timeout``): resolving,
  connecting, the TLS handshake, sending, and the answer's headers and body.
  A receiver that drips, streams forever or never answers costs its own
  attempt that long and nobody else anything: the other attempts on the loop
  go on meanwhile.
- Only the first 1 KiB of an answer is read; a connection whose answer was not
  read to its end is closed, never drained. No redirects, no decompression.
- Every new connection resolves the host, refuses the answer when any address
  is not allowed (``outbound.check_address``), and connects to the checked
  address itself, so there is no second lookup to rebind.
- Connections are kept alive and pooled per (scheme, host, port, whether
  private addresses are allowed): a kept-alive connection goes to an address
  that was checked when it was opened.

HTTP/1.1 framing (content-length, chunked, keep-alive) is h11's, the parser
under httpx and uvicorn; the rest is plain asyncio streams.

Each thread that sends has its own loop (made on first use, again in a child
forked since) and its own pool of connections, kept between calls: ``start``
queues attempts, ``wait`` runs the loop until one is over. No second thread,
so no lock and no GIL hand-offs between the sender and the database work.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

from approvals.outbound import EXCERPT_BYTES, Result, UnsafeURL, check_address

MAX_IDLE_PER_HOST = 32  # kept-alive connections per host; more are closed after use
READ_SIZE = 65536
LINGER_SECONDS = 0.002  # see wait()

Key = tuple[str, str, int, bool]  # scheme, host, port, allow_private


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    address: str  # the checked address it is connected to

    def usable(self) -> bool:
        # The receiver closed it while it was idle (or sent something unasked).
        return not (
            self.writer.is_closing() or self.reader.at_eof() or len(self.reader._buffer)  # type: ignore[attr-defined]
        )

    def close(self) -> None:
        self.writer.close()


@dataclass
class _State:
    """One thread's loop and its kept-alive connections."""

    loop: asyncio.AbstractEventLoop
    pid: int
    idle: dict[Key, list[_Connection]] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None


_local = threading.local()


def _state() -> _State:
    state: _State | None = getattr(_local, "state", None)
    if state is None or state.pid != os.getpid():  # first use, or a child forked since
        state = _local.state = _State(asyncio.new_event_loop(), os.getpid())
    return state


Attempt = asyncio.Task[Result]


def start(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float
) -> Attempt:
    """Queue one POST on this thread's loop; it runs while ``wait`` does. Its
    Result never reports network trouble as an exception."""
    state = _state()
    return state.loop.create_task(
        attempt(state, url, body, headers, allow_private=allow_private, timeout=timeout)
    )


def wait(attempts: Iterable[Attempt], timeout: float) -> set[Attempt]:
    """Run this thread's loop until one of ``attempts`` is over or ``timeout``
    seconds pass; returns those that are over. Between calls the loop stands
    still (the caller may use the database then: Django refuses to while a
    loop runs in the thread), and every attempt's deadline is wall-clock time,
    so it holds whatever the caller did meanwhile."""
    pending = set(attempts)
    done = {a for a in pending if a.done()}
    if done or not pending:
        return done
    loop = _state().loop
    finished, pending = loop.run_until_complete(
        asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    )
    if finished and pending:  # the others a moment more, to write them back together
        more, _ = loop.run_until_complete(asyncio.wait(pending, timeout=LINGER_SECONDS))
        finished |= more
    return finished


def kick() -> None:
    """Let the attempts just started go as far as they can without waiting
    (connected ones write their request), then stand still again."""
    _state().loop.run_until_complete(asyncio.sleep(0))


def post_many(
    requests: list[tuple[str, bytes, dict[str, str]]], *, allow_private: bool, timeout: float
) -> list[Result]:
    """POST them all at once; their Results in the same order."""
    attempts = [start(*r, allow_private=allow_private, timeout=timeout) for r in requests]
    while not all(a.done() for a in attempts):
        wait([a for a in attempts if not a.done()], timeout + 1)
    return [a.result() for a in attempts]


async def attempt(
    state: _State,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float,
) -> Result:
    started = time.monotonic()
    answer = _Answer()
    try:
        async with asyncio.timeout(timeout):
            await _exchange(state, answer, url, body, headers, allow_private)
    except TimeoutError:
        answer.error = answer.error or "timeout"
    except UnsafeURL as exc:
        answer.error = str(exc)
    except h11.ProtocolError as exc:
        answer.error = f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        # asyncio words a refused connection "Connect call failed"; say what the OS said.
        reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else exc
        answer.error = f"{type(exc).__name__}: {reason}"
    elapsed = time.monotonic() - started
    error = answer.error
    if elapsed >= timeout and (answer.status is None or error):
        # Cut off by the deadline (what the socket said then is only noise).
        error = f"Timeout: no complete answer within {timeout:g} s"
    return Result(
        status=answer.status,
        latency_ms=int(elapsed * 1000),
        excerpt=bytes(answer.excerpt).decode("utf-8", errors="replace"),
        error=error[:2000],
    )


@dataclass
class _Answer:
    status: int | None = None
    excerpt: bytearray = field(default_factory=bytearray)
    error: str = ""


async def _exchange(
    state: _State,
    answer: _Answer,
    url: str,
    body: bytes,
    headers: dict[str, str],
    allow_private: bool,
) -> None:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname
    if scheme not in ("http", "https") or not host:
        raise UnsafeURL(f"Not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    key: Key = (scheme, host, port, allow_private)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = host if ":" not in host else f"[{host}]"
    default_port = parts.port is None or parts.port == (443 if scheme == "https" else 80)
    request = h11.Request(
        method="POST",
        target=target,
        headers=[
            ("host", netloc if default_port else f"{netloc}:{port}"),
            ("content-length", str(len(body))),
            *((name, value) for name, value in headers.items() if name.lower() != "host"),
        ],
    )
    reused = _take_idle(state, key)
    connection = reused or await _connect(state, key)
    try:
        done = await _roundtrip(connection, request, body, answer)
        if not done and reused is not None and answer.status is None and not answer.error:
            # The receiver closed a kept-alive connection as we sent on it,
            # before reading anything: once more on a fresh one, same deadline.
            connection.close()
            connection = await _connect(state, key)
            done = await _roundtrip(connection, request, body, answer)
    except BaseException:
        connection.close()
        raise
    if not done and answer.status is None and not answer.error:
        answer.error = "RemoteDisconnected: the receiver closed the connection without an answer"
    if done:
        _put_idle(state, key, connection)
    else:
        connection.close()  # not read to its end: closed, never drained


async def _roundtrip(
    connection: _Connection, request: h11.Request, body: bytes, answer: _Answer
) -> bool:
    """Send the request and read the answer, up to EXCERPT_BYTES of its body.
    True when the answer was read to its end and the connection may be reused."""
    http = h11.Connection(our_role=h11.CLIENT)
    connection.writer.write(
        http.send(request) + http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
    )
    try:
        await connection.writer.drain()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                if len(answer.excerpt) >= EXCERPT_BYTES:
                    return False  # what we keep is in: the rest is not read
                data = await connection.reader.read(READ_SIZE)
                http.receive_data(data)
                if not data and answer.status is None:
                    return False  # closed without an answer
                continue
            if isinstance(event, h11.Response):
                answer.status = event.status_code
            elif isinstance(event, h11.Data):
                room = EXCERPT_BYTES - len(answer.excerpt)
                answer.excerpt += event.data[:room]
            elif isinstance(event, h11.EndOfMessage):
                return http.our_state is h11.DONE and http.their_state is h11.DONE
            elif isinstance(event, h11.ConnectionClosed):
                return False
            # h11.InformationalResponse (1xx): the real answer follows.
    except (ConnectionError, h11.RemoteProtocolError) as exc:
        if answer.status is None and isinstance(exc, ConnectionError):
            return False  # nothing came back: maybe a stale connection, see _exchange
        answer.error = f"{type(exc).__name__}: {exc}"
        return False


def _take_idle(state: _State, key: Key) -> _Connection | None:
    pool = state.idle.get(key)
    while pool:
        connection = pool.pop()
        if connection.usable():
            return connection
        connection.close()
    return None


def _put_idle(state: _State, key: Key, connection: _Connection) -> None:
    pool = state.idle.setdefault(key, [])
    if len(pool) < MAX_IDLE_PER_HOST:
        pool.append(connection)
    else:
        connection.close()


async def _connect(state: _State, key: Key) -> _Connection:
    scheme, host, port, allow_private = key
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"The callback host {host!r} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:  # all of them, as a name may mix public and private answers
        check_address(address, allow_private=allow_private)
    tls = None
    if scheme == "https":
        if state.tls is None:
            state.tls = ssl.create_default_context()
        tls = state.tls
    error: OSError | None = None
    for address in addresses:
        try:
            reader, writer = await asyncio.open_connection(
                address,
                port,
                ssl=tls,
                server_hostname=host if tls else None,
                limit=READ_SIZE,
            )
        except OSError as exc:
            error = exc
            continue
        return _Connection(reader, writer, address)
    raise error or OSError(f"cannot connect to {host}")
