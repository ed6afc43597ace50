"""Pooled connections: what one user of a connection leaves, the next must not inherit."""

import pytest
from django.db import connection

from tests.helpers import another_session
from tests.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _held(key: int) -> bool:
    with another_session() as other:
        row = other.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
            [key],
        ).fetchone()
    return bool(row and row[0])


def test_a_lock_a_task_failed_to_release_goes_when_its_connection_returns_to_the_pool():
    # A callback sender whose release failed, say: the connection must not
    # carry the agent's slot to whoever takes it from the pool next.
    assert connection.settings_dict["OPTIONS"].get("pool"), "the suite runs with the pool"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [424242])
    assert _held(424242)

    connection.close()  # back to the pool

    wait_for(lambda: not _held(424242), timeout=5, what="the pool to let the lock go")
    with connection.cursor() as cursor:  # and the pool still serves
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
