"""Celery's Django fixup, keeping Django's connection pool between tasks.

Celery (5.5 and later) closes a prefork child's whole connection pool after
every task, so that no pool outlives a fork. A child then opened a new pool,
and a new PostgreSQL connection, for every task: PostgreSQL forks a backend
for each, and the engine's one-row deadline timers paid for that many times a
second. Here a child discards what it may have inherited once, when it starts
(as Celery does), and between tasks only hands its connection back to its own
pool. Without a pool (SQLite) a connection is closed after each task, as before.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.fixups.django import DjangoFixup, DjangoWorkerFixup


class PooledWorkerFixup(DjangoWorkerFixup):
    def close_database(self, **kwargs: Any) -> None:
        for conn in self._db.connections.all(initialized_only=True):
            try:
                conn.close()  # with a pool: back to this process's pool
            except self.interface_errors:
                pass
            except self.DatabaseError as exc:
                if "closed" not in str(exc) and "not connected" not in str(exc):
                    raise


class PooledFixup(DjangoFixup):
    _worker_fixup: DjangoWorkerFixup | None

    @property
    def worker_fixup(self) -> DjangoWorkerFixup:
        # Built when a worker starts, not with the app (it reads the app's
        # configuration, which is not loaded yet then).
        if self._worker_fixup is None:
            self._worker_fixup = PooledWorkerFixup(self.app)
        return self._worker_fixup

    @worker_fixup.setter
    def worker_fixup(self, value: DjangoWorkerFixup) -> None:
        self._worker_fixup = value


def fixup(app: Celery, env: str = "DJANGO_SETTINGS_MODULE") -> DjangoFixup | None:
    """Celery's own ``fixup`` with PooledFixup (same conditions)."""
    if os.environ.get(env) and "django" not in app.loader_cls.lower():
        return PooledFixup(app).install()
    return None
