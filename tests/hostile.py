"""Real local socket servers that misbehave the way a hostile receiver can.

- ``drip``: reads the request, then sends an HTTP answer one byte a second;
- ``drip-body``: sends the answer's status and headers at once, then its body
  one byte a second;
- ``stream``: answers 200 at once, then a body that never ends, as fast as it can;
- ``silent``: accepts the connection, reads the request, and never answers.

Each counts connections and requests; ``stop`` ends every connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class HostileReceiver:
    def __init__(self, mode: str):
        assert mode in ("drip", "drip-body", "stream", "silent")
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[float] = []  # time.monotonic() of each request's arrival
        self.stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/approvals/callback"

    def __enter__(self) -> HostileReceiver:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:  # the request's headers; the body is small
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            with self._lock:
                self.requests.append(time.monotonic())
            if self.mode == "silent":
                self.stopped.wait()
            elif self.mode in ("drip", "drip-body"):
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                if self.mode == "drip-body":
                    sock.sendall(head)
                    head = b""
                for byte in head + b"x" * 100000:
                    if self.stopped.wait(1.0):
                        return
                    sock.sendall(bytes([byte]))
            else:
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (4096, b"y" * 4096)
                while not self.stopped.is_set():
                    sock.sendall(chunk)
