"""The one way this service makes outbound HTTP requests (callbacks, Slack, webhooks).

- A wall-clock deadline for the whole attempt (10 s by default): connecting,
  sending, and the answer's headers and body. A receiver that answers one byte
  a second, streams forever or never answers is cut off at the deadline by a
  watchdog that shuts the socket down (a timeout per socket read would let a
  byte a second go on forever).
- Only the first 1 KiB of an answer is read and kept; a connection whose
  answer was not read to its end is closed, never drained. Answers are not
  decompressed.
- Redirects are never followed: a 3xx is an answer like any other.
- The address is checked after DNS resolution, at connection time, and the
  connection goes to the checked address, so a name that resolves to a public
  address when the URL is saved cannot later be pointed at 127.0.0.1 or the
  cloud metadata service (DNS rebinding). Private, loopback, link-local and
  other non-global addresses are refused unless the operator allows them,
  and so are IPv6 addresses that carry an IPv4 one (IPv4-mapped, NAT64, 6to4,
  Teredo, IPv4-compatible) whenever the IPv4 address inside is not global;
  NAT64 and 6to4 are refused outright, as their gateway decides where they go.
- Connections are pooled and kept alive between deliveries to the same host.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

EXCERPT_BYTES = 1024


IPv4 = ipaddress.IPv4Address


class UnsafeURL(ValueError):
    pass


@dataclass(frozen=True)
class Result:
    status: int | None
    latency_ms: int
    excerpt: str
    error: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def check_url(url: str, *, allow_private: bool, allow_http: bool) -> None:
    """Refuse a callback URL before it is stored: scheme, host, and where it resolves."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("Callback URLs must use https.")
    if parts.scheme == "http" and not allow_http:
        raise UnsafeURL("Callback URLs must use https.")
    if not parts.hostname:
        raise UnsafeURL("The callback URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("The callback URL's port is not a number.") from None
    if allow_private:
        return
    for address in resolve(parts.hostname, port):
        check_address(address, allow_private=False)


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"The callback host {host!r} does not resolve ({exc}).") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# IPv6 prefixes that hand the packet to an IPv4 address of a gateway's choosing.
TRANSLATED = [
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # NAT64, local use
    ipaddress.IPv6Network("2002::/16"),  # 6to4
]


def check_address(address: str, *, allow_private: bool) -> None:
    if allow_private:
        return
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for inner in _embedded_ipv4(ip):
        if not inner.is_global:
            raise UnsafeURL(
                f"The callback host resolves to {ip}, which carries the private, loopback "
                f"or link-local address {inner}; set APPROVALS_ALLOW_PRIVATE_CALLBACKS to "
                "allow it."
            )
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in TRANSLATED):
        raise UnsafeURL(
            f"The callback host resolves to {ip}, a NAT64 or 6to4 address, which a "
            "gateway translates to an IPv4 address of its choosing; use a plain address."
        )
    if not ip.is_global:
        raise UnsafeURL(
            f"The callback host resolves to {ip}, a private, loopback or link-local "
            "address; set APPROVALS_ALLOW_PRIVATE_CALLBACKS to allow it."
        )


def _embedded_ipv4(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64,
    IPv4-compatible), any of which a network may end up sending the packet to."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found = []
    if ip.ipv4_mapped:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour:
        found.append(ip.sixtofour)
    if ip.teredo:
        found.extend(ip.teredo)  # (server, client)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if any(ip in net for net in TRANSLATED[:2]):
        found.append(low32)
    if int(ip) >> 32 == 0 and int(ip) > 0xFFFF:  # deprecated IPv4-compatible ::a.b.c.d
        found.append(low32)
    return found


class _Watchdog:
    """Shuts a socket down when its attempt's deadline passes.

    One thread per process (started lazily, again after a fork) and a heap of
    deadlines, so an attempt costs a heap push, not a thread. Shutting the
    socket down wakes a read blocked on it at once, in this thread or any.
    """

    def __init__(self) -> None:
        self._wakeup = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._cancelled: set[int] = set()
        self._pending: set[int] = set()
        self._numbers = itertools.count()
        self._pid = 0

    def _start(self) -> None:
        """First use in this process, or in a child forked from it (where the
        thread is gone and a lock may have been copied mid-use): start afresh."""
        with _START_LOCK:
            if self._pid == os.getpid():
                return
            self._wakeup = threading.Condition()
            self._heap, self._cancelled, self._pending = [], set(), set()
            threading.Thread(target=self._run, name="outbound-watchdog", daemon=True).start()
            self._pid = os.getpid()

    def arm(self, deadline: float, sock: socket.socket) -> int:
        if self._pid != os.getpid():
            self._start()
        number = next(self._numbers)
        with self._wakeup:
            heapq.heappush(self._heap, (deadline, number, sock))
            self._pending.add(number)
            if self._heap[0][1] == number:
                self._wakeup.notify()
        return number

    def disarm(self, numbers: list[int]) -> None:
        with self._wakeup:
            self._cancelled.update(n for n in numbers if n in self._pending)

    def _run(self) -> None:
        with self._wakeup:
            while True:
                while self._heap and self._heap[0][1] in self._cancelled:
                    number = heapq.heappop(self._heap)[1]
                    self._cancelled.discard(number)
                    self._pending.discard(number)
                if not self._heap:
                    self._wakeup.wait()
                    continue
                deadline, number, sock = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wakeup.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._pending.discard(number)
                with contextlib.suppress(OSError):  # already closed: the attempt is over
                    sock.shutdown(socket.SHUT_RDWR)


_START_LOCK = threading.Lock()
_WATCHDOG = _Watchdog()
_attempt = threading.local()  # the current attempt's deadline and armed watches


def _watch(sock: socket.socket | None) -> None:
    deadline = getattr(_attempt, "deadline", None)
    if deadline is not None and sock is not None:
        _attempt.armed.append(_WATCHDOG.arm(deadline, sock))


class _GuardedConnectionMixin:
    """Mixed into urllib3's connection classes, which provide these attributes."""

    allow_private = False
    _dns_host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        addresses = resolve(self._dns_host, self.port)
        for address in addresses:
            check_address(address, allow_private=self.allow_private)
        error: OSError | None = None
        for address in addresses:
            try:
                sock = create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                error = exc
                continue
            _watch(sock)  # before the TLS handshake, which a receiver could drag out too
            return sock
        raise error or OSError(f"cannot connect to {self._dns_host}")

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a kept-alive connection: watch it for this attempt
            _watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


def _manager(allow_private: bool) -> urllib3.PoolManager:
    http = type("Conn", (_GuardedConnectionMixin, HTTPConnection), {"allow_private": allow_private})
    https = type(
        "TLSConn", (_GuardedConnectionMixin, HTTPSConnection), {"allow_private": allow_private}
    )
    manager = urllib3.PoolManager(num_pools=100, maxsize=4, retries=False, block=False)
    manager.pool_classes_by_scheme = {
        "http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type("TLSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
    }
    return manager


_MANAGERS = {True: _manager(True), False: _manager(False)}


def post(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float = 10.0
) -> Result:
    """POST once, within ``timeout`` seconds of wall-clock time in all; never
    raises for network trouble, it reports it in the Result."""
    started = time.monotonic()
    deadline = started + timeout
    _attempt.deadline, _attempt.armed = deadline, []
    status: int | None = None
    excerpt, error = b"", ""
    try:
        response = _MANAGERS[allow_private].request(
            "POST",
            url,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            decode_content=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        status = response.status
        try:
            excerpt, error = _excerpt(response)
        finally:
            connection = response.connection
            if connection is not None and response.length_remaining != 0:
                connection.close()  # not read to its end: close it, never drain it
            response.release_conn()
    except UnsafeURL as exc:
        error = str(exc)
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None)
        if isinstance(reason, UnsafeURL):
            error = str(reason)
        else:
            error = f"{type(exc).__name__}: {reason or exc}"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _WATCHDOG.disarm(_attempt.armed)
        _attempt.deadline, _attempt.armed = None, []
    elapsed = time.monotonic() - started
    if elapsed >= timeout and (status is None or error):
        # Cut off by the deadline (what the socket said then is only noise).
        error = f"Timeout: no complete answer within {timeout:g} s"
    return Result(
        status=status,
        latency_ms=int(elapsed * 1000),
        excerpt=excerpt.decode("utf-8", errors="replace"),
        error=error[:2000],
    )


def _excerpt(response: urllib3.BaseHTTPResponse) -> tuple[bytes, str]:
    """The first EXCERPT_BYTES of the answer's body, as far as it came, and
    the error that cut it short, if any."""
    parts: list[bytes] = []
    size, error = 0, ""
    while size < EXCERPT_BYTES:
        try:
            part = response.read1(EXCERPT_BYTES - size)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts), error
