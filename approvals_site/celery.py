"""The Celery app: ``celery -A approvals_site worker`` and ``celery -A approvals_site beat``.

Run as many workers as you like and exactly one beat. With ``REDIS_URL`` the
broker is Redis; without it, an embedded broker on local files under var/, so
a demo needs nothing installed (and is still really asynchronous). Tasks travel
in three lanes (queues), declared in approvals/lanes.py and routed by the
settings' CELERY_TASK_ROUTES.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvals_site.settings")

# Celery's Django fixup, but one that keeps Django's connection pool between
# tasks (approvals_site/celery_fixup.py).
app = Celery("approvals_site", fixups=["approvals_site.celery_fixup:fixup"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
