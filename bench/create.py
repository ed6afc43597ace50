"""Concurrent request creation, each with its audit event, outbox rows and timer.

    .venv/bin/python bench/create.py [--threads 8] [--per-thread 150]

Creates requests from several threads at once, each with its own connection,
and prints creates per second with latency percentiles. Nothing global may be
locked on this path: a per-create counter row for the audit (tried first)
halved the rate here, which is why requests are sealed by beat instead
(approvals.audit.seal).
"""

from __future__ import annotations

import argparse
import threading
import time

from _django import organisation, percentiles, setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=150)
    args = parser.parse_args()
    setup()
    from django.db import connection

    from approvals import actions
    from approvals.agents import create_agent

    organisation()
    agent = create_agent("bench").agent
    latencies: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        mine = []
        try:
            for _ in range(args.per_thread):
                started = time.perf_counter()
                actions.create_request(
                    agent, body={"action": "bench.pay", "summary": "bench", "context": {}}
                )
                mine.append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stats = percentiles(latencies)
    print(
        f"{len(latencies)} creates from {args.threads} threads: {len(latencies) / elapsed:.0f}/s, "
        f"p50={stats['p50']:.1f} ms p99={stats['p99']:.1f} ms"
    )


if __name__ == "__main__":
    main()
