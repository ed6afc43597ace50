"""Task names and the queue (lane) each one travels in: declared once, here.

Three lanes, so that nobody can stall anyone else:

- ``engine``: the deadline sweep, precise deadline timers, escalations and
  expiries, and the outbox sweeps. Nothing in it waits on the network.
- ``notifications``: mail and Slack, each send bounded in time.
- ``callbacks``: deliveries to agents' receivers, the only lane an outsider
  can slow down (each attempt is bounded, and one agent holds only a few
  attempts at once, see ``approvals.callbacks``).

A plain ``celery -A approvals_site worker`` consumes all three (they are the
worker's default queues); ``-Q engine`` and so on dedicate a worker to a lane.

This module imports nothing from Django, so the settings can read it.
"""

from __future__ import annotations

ENGINE = "engine"
NOTIFICATIONS = "notifications"
CALLBACKS = "callbacks"
QUEUES = (ENGINE, NOTIFICATIONS, CALLBACKS)

SWEEP = "approvals.tasks.sweep"
HELP_SWEEP = "approvals.tasks.help_sweep"
FIRE_DEADLINE = "approvals.tasks.fire_deadline"
SET_DEADLINE_TIMERS = "approvals.tasks.set_deadline_timers"
SWEEP_OUTBOXES = "approvals.tasks.sweep_outboxes"
SWEEP_CALLBACKS = "approvals.tasks.sweep_callbacks"
SEAL_AUDIT = "approvals.tasks.seal_audit"
SEND_NOTIFICATION = "approvals.tasks.send_notification"
DELIVER_CALLBACK = "approvals.tasks.deliver_callback"
# One message for many: the engine hands a chunk's notifications to their
# lane, which sends them together (approvals.notifications.send_many).
FAN_OUT_NOTIFICATIONS = "approvals.tasks.fan_out_notifications"

LANE = {
    SWEEP: ENGINE,
    HELP_SWEEP: ENGINE,
    FIRE_DEADLINE: ENGINE,
    SET_DEADLINE_TIMERS: ENGINE,
    SWEEP_OUTBOXES: ENGINE,
    # The callback sweep only reads the database and enqueues: it belongs with
    # the engine, so retries are handed out even while every sender is busy.
    SWEEP_CALLBACKS: ENGINE,
    SEAL_AUDIT: ENGINE,
    SEND_NOTIFICATION: NOTIFICATIONS,
    DELIVER_CALLBACK: CALLBACKS,
    FAN_OUT_NOTIFICATIONS: NOTIFICATIONS,
}

ROUTES = {name: {"queue": queue} for name, queue in LANE.items()}
