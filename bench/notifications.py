"""What sending one notification costs the notifications lane, in process.

    .venv/bin/python bench/notifications.py [--count 2000]

Escalates ``--count`` due requests with one sweep (so each has an escalation
notification, as in a burst), then sends half of them one by one through
``approvals.notifications.send`` (a task each) and the other half 100 at a
time through ``send_many`` (as the sweep hands them to the lane: one digest
per role and batch), with Django's in-memory mail backend, and prints the
time and the database queries per notification.
"""

from __future__ import annotations

import argparse
import os
import time

from _django import organisation, setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    os.environ["EMAIL_BACKEND"] = "django.core.mail.backends.locmem.EmailBackend"
    setup()
    from django.db import connection
    from escalation import fill as fill_due  # bench/escalation.py

    from approvals import escalation, notifications
    from approvals.agents import create_agent
    from approvals.models import Notification

    organisation()
    create_agent("bench")
    fill_due(0, args.count)
    escalation.sweep()
    ids = list(Notification.objects.filter(kind="escalated").values_list("pk", flat=True))
    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    half = len(ids) // 2
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        for notification_id in ids[:half]:
            assert notifications.send(notification_id)
    elapsed = time.perf_counter() - started
    print(
        f"{half:,} escalation notifications sent one by one (in-memory mail): "
        f"{elapsed / half * 1000:.2f} ms and {queries / half:.1f} queries each"
    )
    rest, queries = ids[half:], 0
    started = time.perf_counter()
    with connection.execute_wrapper(count):
        for start in range(0, len(rest), 100):  # as the sweep hands them over
            assert notifications.send_many(rest[start : start + 100]) == []
    elapsed = time.perf_counter() - started
    print(
        f"{len(rest):,} sent 100 at a time (send_many, as digests): "
        f"{elapsed / len(rest) * 1000:.2f} ms and {queries / len(rest):.2f} queries each"
    )


if __name__ == "__main__":
    main()
