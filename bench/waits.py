"""Long-polls against the real web server: 1,000 concurrent ``?wait=60``, and
what they cost everyone else.

    .venv/bin/python bench/waits.py [--waits 1000] [--workers 2] [--calls 300]
    .venv/bin/python bench/waits.py --server wsgi --threads 8   # the old setup, no waits

Starts gunicorn as the README does (``gunicorn.conf.py``, ``-w N``) on a free
port against the bench database, with Redis at ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``, keys under ``countersign:``) for the limits. Prints:

1. create and decide latency (p50/p99) and throughput from 8 agents' worth of
   concurrent clients on keep-alive connections, with no waits held;
2. the same while 1,000 waits are held (each on a connection of its own);
3. wake-up latency: from a decision's commit (``decide`` returned) to the
   waiting client holding the answer, one decision at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from _django import ROOT, organisation, percentiles, process_env, setup

CLIENTS = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waits", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=300, help="create+decide pairs per phase")
    parser.add_argument("--wakeups", type=int, default=200)
    parser.add_argument("--server", choices=["asgi", "wsgi"], default="asgi")
    parser.add_argument("--threads", type=int, default=8, help="WSGI threads (--server wsgi)")
    args = parser.parse_args()
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    setup()
    sys.path.insert(0, str(ROOT))
    from approvals.agents import create_agent
    from approvals.api.throttling import store
    from approvals.tokens import issue_token
    from tests.processes import Processes, free_port, wait_for

    for key in store().client.scan_iter("countersign:*"):  # type: ignore[attr-defined]
        store().client.delete(key)  # type: ignore[attr-defined]  # a previous run's counters
    reviewer = organisation()
    token = issue_token(reviewer)
    agent = create_agent("bench", rate_limit="1000000/min", max_waits=args.waits + 10)
    logs = Path(tempfile.mkdtemp(prefix="bench-waits-"))
    env = process_env(
        logs,
        APPROVALS_REVIEWER_RATE_LIMIT="1000000/min",
    )
    port = free_port()
    processes = Processes(logs, env)
    command = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}"]
    command += ["-w", str(args.workers)]
    if args.server == "wsgi":
        command += ["-k", "gthread", "--threads", str(args.threads), "approvals_site.wsgi"]
    processes.start("web", *command)
    client = Client(port, agent.api_key, token)
    try:
        wait_for(client.answers, timeout=60, what="gunicorn")
        print(f"gunicorn {args.server}, -w {args.workers}, {os.cpu_count()} cores")
        client.load(args.calls, "no waits held")
        if args.server == "wsgi":
            return
        ids = [client.create() for _ in range(args.waits)]
        waiters = Waiters(port, agent.api_key, ids)
        waiters.start()
        slots = f"countersign:waits:{agent.agent.pk}"
        wait_for(
            lambda: store().client.zcard(slots) >= args.waits,  # type: ignore[attr-defined]
            timeout=120, what="all waits held", every=0.2,
        )  # fmt: skip
        print(f"{args.waits} waits held")
        client.load(args.calls, f"{args.waits} waits held")

        from approvals import actions

        lags = []
        for request_id in ids[: args.wakeups]:
            actions.decide(request_id, reviewer=reviewer, outcome="approve")
            committed = time.monotonic()
            wait_for(lambda r=request_id: r in waiters.answered, timeout=10, what="the answer")
            lags.append((waiters.answered[request_id] - committed) * 1000)
        stats = percentiles(lags)
        print(
            f"wake-up, decision commit -> answer held by the client ({len(lags)} decisions, "
            f"{args.waits} waits): p50={stats['p50']:.1f} ms p99={stats['p99']:.1f} ms "
            f"max={stats['max']:.1f} ms"
        )
    finally:
        processes.stop_all()


class Client:
    """Create and decide through the server, on keep-alive connections."""

    def __init__(self, port: int, key: str, token: str):
        self.port, self.key, self.token = port, key, token
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return self.local.conn

    def call(self, method: str, path: str, auth: str, body: dict | None = None) -> dict:
        conn = self._conn()
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        response = conn.getresponse()
        data = json.loads(response.read())
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data}")
        return data

    def answers(self) -> bool:
        try:
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=2).connect()
            return True
        except OSError:
            return False

    def create(self) -> str:
        body = {"action": "bench.pay", "summary": "bench", "context": {"amount": 1}}
        return self.call("POST", "/api/v1/requests", f"Bearer {self.key}", body)["id"]

    def decide(self, request_id: str) -> None:
        path = f"/api/v1/requests/{request_id}/decision"
        self.call("POST", path, f"Token {self.token}", {"outcome": "approve"})

    def load(self, pairs: int, label: str) -> None:
        creates: list[float] = []
        decides: list[float] = []

        def one_client(count: int) -> None:
            for _ in range(count):
                started = time.monotonic()
                request_id = self.create()
                created = time.monotonic()
                self.decide(request_id)
                creates.append((created - started) * 1000)
                decides.append((time.monotonic() - created) * 1000)

        threads = [
            threading.Thread(target=one_client, args=(pairs // CLIENTS,)) for _ in range(CLIENTS)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        c, d = percentiles(creates), percentiles(decides)
        print(
            f"{label}: {CLIENTS} concurrent clients, {len(creates)} create+decide pairs in "
            f"{elapsed:.1f} s = {2 * len(creates) / elapsed:.0f} calls/s; "
            f"create p50={c['p50']:.0f} ms p99={c['p99']:.0f} ms; "
            f"decide p50={d['p50']:.0f} ms p99={d['p99']:.0f} ms"
        )


class Waiters:
    """One connection per wait, all on one asyncio loop in a thread; records
    when each answer (a terminal resource) arrived."""

    def __init__(self, port: int, key: str, ids: list[str]):
        self.port, self.key, self.ids = port, key, ids
        self.answered: dict[str, float] = {}
        self.loop = asyncio.new_event_loop()
        self.futures: list = []  # asyncio keeps only weak references to tasks

    def start(self) -> None:
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        for request_id in self.ids:
            self.futures.append(asyncio.run_coroutine_threadsafe(self._wait(request_id), self.loop))

    async def _wait(self, request_id: str) -> None:
        """Wait as an agent does: again on the same connection when a wait
        ends with the request still pending."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        while True:
            writer.write(
                f"GET /api/v1/requests/{request_id}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.key}\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = json.loads(await reader.readexactly(length))
            if body.get("status") == "approved":
                self.answered[request_id] = time.monotonic()
                break
            if body.get("status") != "pending":
                raise RuntimeError(f"wait: {head[:40]!r} {body}")
        writer.close()


if __name__ == "__main__":
    main()
