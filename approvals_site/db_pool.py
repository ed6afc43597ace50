"""What a pooled PostgreSQL connection must not carry to its next user."""

from __future__ import annotations

from typing import Any


def reset(conn: Any) -> None:
    """Run by the pool (on one of its own threads) as a connection comes back.

    Session advisory locks outlive the task that took them: the callback
    senders' per-agent slots and the one-sweep lock. Each is released in a
    ``finally``, but a release that fails (an aborted transaction) used to be
    made good by closing the connection. With a pool the connection lives on,
    so it lets go of every such lock here, before anyone can take it again.
    """
    conn.execute("SELECT pg_advisory_unlock_all()")
