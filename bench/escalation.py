"""How the sweep scales, and how late escalations fire.

    .venv/bin/python bench/escalation.py [--skip-lag]

1. Fill PostgreSQL with 100,000 pending requests not yet due plus 1,000 due,
   and time one full sweep (1,000 escalations); again with 10,000 not due.
   The sweep's cost should follow the number due, not the number open: the
   ratio of the two times should stay near 1 (goal: within 1.3), and 1,000
   escalations should take under 5 s on a 2-core machine. Then what a
   precise timer costs that goes off after the sweep handled its row.
2. Escalation lag: 1,000 requests with deadlines staggered over 20 s, a real
   Celery worker and beat on Redis; lag is from ``due_at`` to the escalation
   (the moment its chunk's transaction began).
3. The same for 10,000 deadlines that fall due in the same second, with the
   engine's lane on a worker of its own, then on two (the README's advice,
   for failover: the second helps with a backlog) (goal: p99 under 1 s).

    .venv/bin/python bench/escalation.py --only-burst [--timers] [--engine-workers 2]
        [--without-notifications] [--busy-loops N]
    .venv/bin/python bench/escalation.py --only-sweeps  # just 1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from _django import ROOT, organisation, percentiles, process_env, setup

DUE = 1_000


def requests_factory():
    """An unsaved pending request at level 1 of the bench policy."""
    from django.utils import timezone

    from approvals.models import Agent, ApprovalRequest
    from policies.models import Policy, Role

    agent = Agent.objects.get(name="bench")
    version = Policy.objects.select_related("current_version").get(name="bench").current_version
    role = Role.objects.get(name="first")
    now = timezone.now()
    return lambda due_at: ApprovalRequest(
        id=uuid.uuid4(), agent=agent, body_sha256="-", action="bench.pay", summary="bench",
        context={"amount": 10.0, "vendor": "Acme"}, payload={}, requester={},
        policy_version=version, rule_name="pay", action_class="internal",
        levels=version.spec["rules"][0]["levels"], owner_role=role, level_started_at=now,
        due_at=due_at, created_at=now, updated_at=now,
    )  # fmt: skip


def fill(not_due: int, due: int, *, last_level: bool = False) -> None:
    from django.db import connection
    from django.utils import timezone

    from approvals.models import ApprovalRequest, AuditEvent, Notification, Ownership

    with connection.cursor() as cursor:
        for model in (AuditEvent, Notification, Ownership, ApprovalRequest):
            cursor.execute(f"TRUNCATE {model._meta.db_table} CASCADE")
    row = requests_factory()
    now = timezone.now()
    batch = []
    for n in range(not_due + due):
        batch.append(row(now + timedelta(hours=1) if n >= due else now - timedelta(seconds=1)))
        if last_level and n < due:
            batch[-1].level = len(batch[-1].levels)
            batch[-1].callback_url = "http://127.0.0.1:9/hook"
        if len(batch) == 5000:
            ApprovalRequest.objects.bulk_create(batch)
            batch = []
    ApprovalRequest.objects.bulk_create(batch)
    # As autovacuum leaves a table in service (visibility map, hint bits set),
    # not as a bulk load leaves it: the first reader would pay for that.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {ApprovalRequest._meta.db_table}")


def time_sweep(not_due: int) -> float:
    from approvals import escalation

    fill(not_due, DUE)
    started = time.perf_counter()
    result = escalation.sweep()
    elapsed = time.perf_counter() - started
    assert result.escalated == DUE, result
    print(
        f"sweep with {not_due:>7,} not due + {DUE:,} due: {elapsed:.2f} s "
        f"({DUE / elapsed:,.0f} escalations/s)"
    )
    return elapsed


def time_timeouts() -> float:
    """One sweep of DUE requests at their last level (on_timeout: expire)."""
    from approvals import escalation

    fill(10_000, DUE, last_level=True)
    started = time.perf_counter()
    result = escalation.sweep()
    elapsed = time.perf_counter() - started
    assert result.finished == DUE, result
    print(f"sweep with 10,000 not due + {DUE:,} due at their last level: {elapsed:.2f} s "
          f"({DUE / elapsed:,.0f} timeouts/s, each with its callback)")  # fmt: skip
    return elapsed


def time_stale_timers() -> float:
    """After a sweep ended DUE requests in bulk, timers set for them still go
    off: what each costs the engine (goal: one small query)."""
    from approvals import escalation

    fill(0, DUE)
    escalation.sweep()
    started = time.perf_counter()
    for _ in range(DUE):
        assert escalation.fire() is None
    elapsed = time.perf_counter() - started
    print(f"{DUE:,} timers with nothing left to do: {elapsed / DUE * 1000:.2f} ms each")
    return elapsed


def lag_run(
    *,
    timers: bool,
    count: int = 1000,
    spread: float = 20.0,
    engine_lane: bool = False,
    engine_workers: int = 1,
    notifications: bool = True,
    busy_loops: int = 0,
) -> None:
    from django.db.models import Max
    from django.utils import timezone

    from approvals.models import ApprovalRequest, AuditEvent, Notification

    sys.path.insert(0, str(ROOT))
    from tests.processes import Processes, RedisServer, wait_for

    fill(0, 0)
    logs = Path(tempfile.mkdtemp(prefix="bench-escalation-"))
    redis = RedisServer(logs)
    redis.start()
    env = process_env(
        logs,
        REDIS_URL=redis.url,
        APPROVALS_TIMER_LOOKAHEAD_SECONDS="60" if timers else "0",
    )
    processes = Processes(logs, env)
    loops: list[subprocess.Popen] = []
    try:
        if engine_lane:  # as the README advises: the engine's lane on a worker of its own
            processes.worker("worker", "-Q", "engine", "--pool=solo")
            for n in range(2, engine_workers + 1):  # for failover; each helps with a backlog
                processes.worker(f"worker{n}", "-Q", "engine", "--pool=solo")
            # Without notifications: the bound that their sending on the same cores sets.
            lanes = "notifications,callbacks" if notifications else "callbacks"
            processes.worker("others", "-Q", lanes, "--pool=solo")
        else:
            processes.worker()
        processes.beat()
        wait_for(lambda: "ready" in processes.log("worker"), timeout=60, what="worker")
        fill(0, 0)
        # Neighbours on the same cores, as on a shared machine: each a process
        # that spins at full speed (the kernel gives it its share of a core).
        spin = [sys.executable, "-c", "while True: pass"]
        loops += [subprocess.Popen(spin) for _ in range(busy_loops)]
        start = timezone.now() + timedelta(seconds=3 + count / 5000)  # after the INSERT
        row = requests_factory()
        rows = [row(start + timedelta(seconds=spread * n / count)) for n in range(count)]
        ApprovalRequest.objects.bulk_create(rows)
        if timers:  # what beat's next set-deadline-timers run does
            from approvals_site.celery import app

            app.conf["CELERY_BROKER_URL"] = redis.url  # the settings' name (celery 5.6)
            app._pool, app.amqp._producer_pool = None, None  # made for the default broker
            app.send_task("approvals.tasks.set_deadline_timers")
            # As in production, where they are set up to a minute ahead:
            # all of them before the first deadline.
            engine_logs = ["worker", *(f"worker{n}" for n in range(2, engine_workers + 1))]
            wait_for(
                lambda: any(
                    re.search(r"set_deadline_timers\[\S+\] succeeded", processes.log(name))
                    for name in engine_logs
                ),
                timeout=10, what="the timers to be set",
            )  # fmt: skip
            if timezone.now() > start:
                print("(the timers were set after the first deadline)")
        escalated = AuditEvent.objects.filter(kind="escalated")
        # Every half second: the figures are in the events, and counting them
        # more often would take PostgreSQL time from the engine it measures.
        wait_for(
            lambda: escalated.count() == count, timeout=spread + 120, what="escalations", every=0.5
        )
        lags = [late * 1000 for late in escalated.values_list("data__late_seconds", flat=True)]
        stats = percentiles(lags)
        told = ""
        if notifications:  # when the last role heard of its escalations
            unsent = Notification.objects.filter(kind="escalated", sent_at__isnull=True)
            wait_for(lambda: not unsent.exists(), timeout=120, what="notifications", every=0.5)
            last = Notification.objects.filter(kind="escalated").aggregate(Max("sent_at"))
            late = (last["sent_at__max"] - (start + timedelta(seconds=spread))).total_seconds()
            told = f"; every notification sent {late:.1f} s after the last deadline"
        shape = "due in the same second" if spread <= 1 else "staggered deadlines"
        print(
            f"escalation lag, {count:,} {shape}, worker+beat on Redis, "
            f"{'sweep + timers' if timers else 'sweep only'}"
            f"{f' (engine lane on {engine_workers} worker(s) of its own)' if engine_lane else ''}"
            f"{'' if notifications else ', nobody sending notifications'}"
            f"{f', {busy_loops} busy loop(s) beside it' if busy_loops else ''}: "
            f"p50={stats['p50']:.0f} ms p99={stats['p99']:.0f} ms max={stats['max']:.0f} ms{told}"
        )
    finally:
        for loop in loops:
            loop.kill()
        processes.stop_all()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--only-burst", action="store_true", help="just the 10,000 in a second")
    parser.add_argument("--only-sweeps", action="store_true", help="just the one-sweep timings")
    parser.add_argument(
        "--timers", action="store_true", help="--only-burst with precise timers on (the default)"
    )
    parser.add_argument(
        "--engine-workers", type=int, default=1,
        help="--only-burst with this many engine workers (the README advises 2, for failover)",
    )  # fmt: skip
    parser.add_argument(
        "--busy-loops", type=int, default=0,
        help="--only-burst with this many processes spinning beside it (a shared machine)",
    )  # fmt: skip
    parser.add_argument(
        "--without-notifications", action="store_true",
        help="--only-burst with nobody sending notifications: what their sending costs the lag",
    )  # fmt: skip
    args = parser.parse_args()
    setup()
    from approvals.agents import create_agent

    organisation()
    create_agent("bench")

    # Warm up once (imports, the broker connection, caches): a worker
    # process pays that once, not per sweep.
    fill(0, 10)
    from approvals import escalation

    escalation.sweep()
    if args.only_burst:
        lag_run(
            timers=args.timers, count=10_000, spread=1.0, engine_lane=True,
            engine_workers=args.engine_workers, notifications=not args.without_notifications,
            busy_loops=args.busy_loops,
        )  # fmt: skip
        return
    big = time_sweep(100_000)
    small = time_sweep(10_000)
    print(f"ratio 100k/10k open: {big / small:.2f} (goal: within 1.3)")
    time_timeouts()
    time_stale_timers()
    if not (args.skip_lag or args.only_sweeps):
        lag_run(timers=False)
        lag_run(timers=True)
        # 10,000 deadlines in the same second (goal: p99 under 1 s).
        lag_run(timers=False, count=10_000, spread=1.0, engine_lane=True)
        lag_run(timers=True, count=10_000, spread=1.0, engine_lane=True)
        lag_run(timers=True, count=10_000, spread=1.0, engine_lane=True, engine_workers=2)


if __name__ == "__main__":
    main()
