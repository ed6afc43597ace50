"""Create throughput and latency against the bare stack's floor (issue 12).

    .venv/bin/python bench/api.py [--seconds 15] [--connections 16] [--workers 2] [--notify 200]

Starts the real gunicorn twice with the repository's gunicorn.conf.py and
``-w 2``: once serving the service, once serving a floor endpoint under the
same settings and middleware (bench/floor_urls.py: a bare DRF view doing a key
lookup, serializer validation and one INSERT). Drives each with the same
closed-loop load (16 keep-alive connections on loopback, 15 s, one thread per
connection), on a Redis of the script's own as in production (the limiter's
and the broker's), and prints creates per second, p50 and p99 for both and the
ratios. Goals: throughput at least 0.5x the floor's, p99 at most 3x.

With ``--notify N`` it then measures how soon a create's notification is
sent: a Celery worker (every lane) on a Redis of its own, no beat (so no
outbox sweep), N creates through the service one every 50 ms, and the time
from each request's creation to its notification's ``sent_at``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _django import ROOT, organisation, percentiles, process_env, setup

BODY = {
    "action": "bench.pay",
    "summary": "Pay invoice INV-1042",
    "context": {"amount": 1240.0, "currency": "USD", "vendor": "Acme"},
    "payload": {"invoice": "INV-1042", "pay": 1240.0},
    "requester": {"run_id": "run_81"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(port: int, workers: int, settings: str, logs: Path) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=settings, LOG_LEVEL="WARNING")
    env["PYTHONPATH"] = str(ROOT)
    log = open(logs / f"gunicorn-{port}.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", str(workers),
         "-b", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status = post(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "")[0]
            if status in (401, 403):  # up, and refusing the missing key through Django
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"gunicorn on {port} did not start; see {logs}")


def post(conn: http.client.HTTPConnection, key: str) -> tuple[int, bytes]:
    body = json.dumps(BODY)
    conn.request(
        "POST", "/api/v1/requests", body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    response = conn.getresponse()
    return response.status, response.read()


def drive(port: int, key: str, seconds: float, connections: int) -> dict:
    """A closed loop: each connection sends its next create when the previous
    answer is in, for ``seconds``; every call has a 10 s timeout."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[int] = [0] * connections
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                status, _ = post(conn, key)
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                errors[n] += 1
                continue
            if status != 201:
                errors[n] += 1
                continue
            latencies[n].append((time.perf_counter() - started) * 1000)
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - began
    samples = [ms for per in latencies for ms in per]
    return {
        "rate": len(samples) / elapsed,
        "errors": sum(errors),
        **percentiles(samples or [0.0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--notify", type=int, default=0, help="creates to time notifications on")
    args = parser.parse_args()
    setup()
    from django.db import connection

    from approvals.agents import create_agent

    organisation()
    # No rate limit for the bench agent: the limiter is measured, never hit.
    key = create_agent("bench", rate_limit="1000000/s").api_key
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, agent_id bigint, "
            "action varchar(100), summary varchar(500), body jsonb)"
        )
        cursor.execute("TRUNCATE bench_floor")
    connection.close()
    logs = Path(tempfile.mkdtemp(prefix="bench-api-"))
    # As the service runs in production (and as issue 12 measured it): on a
    # Redis, which the limiter and the broker use. Without one each create
    # took its rate-limit token from the embedded default's SQLite file
    # (a tenth of a web worker's time, with an fsync per token).
    from tests.processes import RedisServer

    redis = RedisServer(logs)
    redis.start()
    os.environ["REDIS_URL"] = redis.url
    try:
        measure(args, key, logs)
    finally:
        redis.stop()


def measure(args: argparse.Namespace, key: str, logs: Path) -> None:
    results = {}
    for name, settings in (
        ("floor", "bench.floor_settings"),
        ("create", "approvals_site.settings"),
    ):
        port = free_port()
        server = start_gunicorn(port, args.workers, settings, logs)
        try:
            drive(port, key, 2, args.connections)  # warm up every worker and connection
            results[name] = result = drive(port, key, args.seconds, args.connections)
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(
            f"{name:>6}: {result['rate']:7.1f} req/s  p50 {result['p50']:6.1f} ms  "
            f"p99 {result['p99']:6.1f} ms  errors {result['errors']}"
        )
    floor, create = results["floor"], results["create"]
    print(
        f"create/floor: throughput {create['rate'] / floor['rate']:.2f}x (goal >= 0.5), "
        f"p99 {create['p99'] / floor['p99']:.2f}x (goal <= 3)"
    )
    if args.notify:
        notify_latency(args.notify, args.workers, key, logs)


def notify_latency(count: int, workers: int, key: str, logs: Path) -> None:

    from approvals.models import Notification
    from tests.processes import Processes, RedisServer, wait_for

    Notification.objects.all().delete()
    # A Redis of its own: the throughput runs left their creates' tasks queued.
    redis = RedisServer(logs)
    redis.start()
    os.environ["REDIS_URL"] = redis.url
    env = process_env(logs)
    processes = Processes(logs, env)
    port = free_port()
    server = start_gunicorn(port, workers, "approvals_site.settings", logs)
    try:
        processes.worker("worker", "--pool=threads", "--concurrency=4")
        wait_for(lambda: "ready" in processes.log("worker"), timeout=60, what="worker")
        # Paced, one at a time: this measures how soon, not how many.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(count):
            started = time.monotonic()
            post(conn, key)
            time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))
        done = Notification.objects.filter(kind="new", sent_at__isnull=False)
        wait_for(lambda: done.count() >= count, timeout=120, what="notifications sent")
        lags = [
            (sent - created).total_seconds() * 1000
            for sent, created in done.values_list("sent_at", "request__created_at")
        ]
        stats = percentiles(lags)
        print(
            f"notification, request created -> sent by the worker ({len(lags)} creates, one "
            f"every 50 ms, no outbox sweep): p50 {stats['p50']:.0f} ms, "
            f"p99 {stats['p99']:.0f} ms, max {stats['max']:.0f} ms"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        processes.stop_all()
        redis.stop()


if __name__ == "__main__":
    main()
