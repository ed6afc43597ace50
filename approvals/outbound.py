"""The one way this service makes outbound HTTP requests (callbacks, webhooks).

- An explicit timeout (connect and read, 10 s in all by default).
- Redirects are never followed: a 3xx is an answer like any other.
- The address is checked after DNS resolution, at connection time, and the
  connection goes to the checked address, so a name that resolves to a public
  address when the URL is saved cannot later be pointed at 127.0.0.1 or the
  cloud metadata service (DNS rebinding). Private, loopback, link-local and
  other non-global addresses are refused unless the operator allows them.
- Connections are pooled and kept alive between deliveries to the same host.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.connection import create_connection

EXCERPT_BYTES = 1024


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


def check_address(address: str, *, allow_private: bool) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if not allow_private and not ip.is_global:
        raise UnsafeURL(
            f"The callback host resolves to {ip}, a private, loopback or link-local "
            "address; set APPROVALS_ALLOW_PRIVATE_CALLBACKS to allow it."
        )


class _GuardedConnectionMixin:
    """Mixed into urllib3's connection classes, which provide these attributes."""

    allow_private = False
    _dns_host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        addresses = resolve(self._dns_host, self.port)
        for address in addresses:
            check_address(address, allow_private=self.allow_private)
        error: OSError | None = None
        for address in addresses:
            try:
                return create_connection(
                    (address, self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as exc:
                error = exc
        raise error or OSError(f"cannot connect to {self._dns_host}")


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
    """POST once; never raises for network trouble, it reports it in the Result."""
    started = time.monotonic()
    try:
        response = _MANAGERS[allow_private].request(
            "POST",
            url,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            timeout=urllib3.Timeout(total=timeout),
        )
        try:
            excerpt = response.read(EXCERPT_BYTES).decode("utf-8", errors="replace")
            response.drain_conn()
        finally:
            response.release_conn()
        status, error = response.status, ""
    except UnsafeURL as exc:
        status, excerpt, error = None, "", str(exc)
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None)
        if isinstance(reason, UnsafeURL):
            status, excerpt, error = None, "", str(reason)
        else:
            status, excerpt, error = None, "", f"{type(exc).__name__}: {reason or exc}"
    except OSError as exc:
        status, excerpt, error = None, "", f"{type(exc).__name__}: {exc}"
    latency = int((time.monotonic() - started) * 1000)
    return Result(status=status, latency_ms=latency, excerpt=excerpt, error=error[:2000])
