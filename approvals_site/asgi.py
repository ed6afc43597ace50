"""ASGI entry point, what ``gunicorn.conf.py`` serves: Django, with the body
limit in front (``approvals.api.middleware.BodyLimit``) and long-polls that
hold no thread (``approvals.api.longpoll.LongPoll``)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "approvals_site.settings")

django_application = get_asgi_application()

from approvals.api.longpoll import LongPoll  # noqa: E402 (needs the apps loaded)
from approvals.api.middleware import BodyLimit  # noqa: E402

application = BodyLimit(LongPoll(django_application))
