"""A real local HTTP server standing in for an agent's callback endpoint."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


@dataclass
class Script:
    """What the receiver answers, in order; the last answer repeats."""

    statuses: list[int] = field(default_factory=lambda: [200])
    hold: threading.Event | None = None  # if set, the first request waits for it
    arrived: threading.Event = field(default_factory=threading.Event)
    location: str = ""


class Receiver:
    def __init__(self, script: Script | None = None, port: int = 0):
        self.script = script or Script()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between writes

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                    index = len(receiver.received) - 1
                script = receiver.script
                if receiver.on_request is not None:
                    receiver.on_request(receiver.received[index])
                script.arrived.set()
                if index == 0 and script.hold is not None:
                    script.hold.wait(timeout=60)
                status = script.statuses[min(index, len(script.statuses) - 1)]
                reply = f"answer {index + 1}: {status}".encode()
                self.send_response(status)
                if script.location:
                    self.send_header("Location", script.location)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.on_request = None  # optional hook: called with each Received, in the server thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/approvals/callback"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.script.hold is not None:
            self.script.hold.set()
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """``python -m tests.receiver``: a receiver in a process of its own that
    answers 200 until killed; prints its URL first. For benchmarks: an agent's
    endpoint runs elsewhere, not on the benchmark's interpreter and its GIL."""
    with Receiver() as receiver:
        print(receiver.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
