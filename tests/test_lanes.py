"""Every task has its lane (queue) and time limits, declared in one place."""

from __future__ import annotations

from django.conf import settings

from approvals import lanes, tasks  # noqa: F401  (registers the tasks)
from approvals_site.celery import app


def test_each_task_travels_in_its_lane():
    routed = {name: app.amqp.router.route({}, name)["queue"].name for name in lanes.LANE}
    assert routed == lanes.LANE
    assert {name for name in app.tasks if name.startswith("approvals.")} == set(lanes.LANE)
    assert routed[lanes.DELIVER_CALLBACK] == "callbacks"
    assert routed[lanes.SEND_NOTIFICATION] == "notifications"
    assert {routed[lanes.SWEEP], routed[lanes.FIRE_DEADLINE]} == {"engine"}


def test_a_plain_worker_consumes_every_lane():
    assert set(app.amqp.queues) == {"engine", "notifications", "callbacks"}


def test_the_beat_schedule_names_only_declared_tasks():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(lanes.LANE)
    assert {lanes.LANE[name] for name in scheduled} == {"engine"}


def test_every_task_has_a_soft_and_a_hard_time_limit():
    for name in lanes.LANE:
        task = app.tasks[name]
        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        hard = task.time_limit or app.conf.task_time_limit
        assert soft and hard and soft < hard, name
    deliver = app.tasks[lanes.DELIVER_CALLBACK]
    assert settings.APPROVALS_CALLBACK_TIMEOUT < deliver.soft_time_limit < deliver.time_limit
