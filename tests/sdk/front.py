"""A misbehaving front for the live server (a load balancer having a bad day):
it answers a scripted status, or forwards the request and then drops the
connection without answering, before it starts passing requests through."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class Front:
    """``script`` items: ``(status, headers)`` to answer instead of the server, or
    ``"forward-and-drop"``: the server handles it, the client never hears back."""

    def __init__(self, upstream: str, script: list) -> None:
        self.upstream, self.script = upstream, list(script)
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with front._lock:
                    front.seen.append((self.command, self.path))
                    step = front.script.pop(0) if front.script else None
                if isinstance(step, tuple):
                    status, headers = step
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    payload = b'{"code": "throttled", "detail": "Slow down."}'
                    if status >= 500 or status < 300:
                        payload = b"<html>bad gateway</html>"
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = httpx.request(
                    self.command,
                    front.upstream + self.path,
                    content=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    timeout=90,
                )
                if step == "forward-and-drop":
                    self.close_connection = True
                    self.connection.close()  # the server acted; its answer is lost
                    return
                self.send_response(upstream.status_code)
                for name, value in upstream.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Front:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
