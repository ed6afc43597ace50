"""Shared set-up for benchmarks: Django on a PostgreSQL database of their own.

Benchmarks measure the real thing (PostgreSQL, not SQLite), in a database
named ``countersign_bench`` that they create, migrate and empty themselves.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/countersign_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvals_site.settings")
os.environ.setdefault("LOG_LEVEL", "ERROR")


def setup(*, fresh: bool = False) -> None:
    """Django on the benchmark's database, migrated and empty; ``fresh`` drops
    and creates it first (a database left by older code may not migrate)."""
    import django
    import psycopg

    url = os.environ["DATABASE_URL"]
    if url.startswith("postgres"):
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            if fresh:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)


def process_env(logs, **extra: str) -> dict[str, str]:
    """The environment for the service's own processes (web, workers, beat) a
    benchmark starts: this one's, on the same database, quiet, mail kept in
    memory, plus ``extra``."""
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        APPROVALS_VAR_DIR=str(logs), LOG_LEVEL="WARNING",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )  # fmt: skip
    env.update(extra)
    return env


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


def organisation():
    """A reviewer in two roles and one two-level policy for ``bench.*``; returns the reviewer."""
    from django.contrib.auth import get_user_model

    from policies.config import apply_documents

    reviewer = get_user_model().objects.create_user("reviewer", email="r@example.com")
    levels = [{"role": "first", "deadline": "1h"}, {"role": "second", "deadline": "1h"}]
    rule = {"name": "pay", "actions": ["bench.*"], "class": "internal", "levels": levels}
    apply_documents(
        [
            {"kind": "Role", "name": "first", "members": ["reviewer"]},
            {"kind": "Role", "name": "second", "members": ["reviewer"]},
            {"kind": "ActionClass", "name": "internal"},
            {"kind": "Policy", "name": "bench", "rules": [rule]},
        ],
        author="bench",
    )
    return reviewer
