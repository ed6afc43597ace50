"""The cast of the stories the tests tell (fixtures; plain helpers are in
tests/helpers.py).

- maria and tom: finance managers, who own invoice discrepancies first;
- carol: the CFO, the fallback role;
- olivia: an outsider (compliance), who owns nothing in finance;
- sam: a support lead, on whose behalf agents ask;
- the agent "billing-bot", and a second agent "other-bot".
"""

from __future__ import annotations

import contextlib
import os

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from approvals.agents import create_agent
from policies.config import apply_documents, load_yaml
from tests.helpers import CONFIG, INVOICE, agent_client, reviewer_client, use_broker
from tests.processes import Processes, RedisServer


@pytest.fixture(autouse=True, scope="session")
def _empty_test_broker():
    """Tasks that after-commit hooks publish during tests go to Redis database
    15 and nobody consumes them there; start every run with it empty."""
    import redis

    # Without Redis here, the tests that need one still start their own.
    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2).flushdb()


@pytest.fixture(autouse=True, scope="session")
def _stop_wait_listener(django_db_setup):
    """A wait in this process opens a LISTEN connection; close it before the
    test database is dropped."""
    yield
    from approvals.api.longpoll import listener

    listener.stop()


@pytest.fixture(autouse=True)
def _no_timers_set():
    """Each test sets its own deadline timers (a process sets one per moment)."""
    from approvals import timers

    timers.forget()


@pytest.fixture(autouse=True)
def _private_var_dir(settings, tmp_path):
    """Commands that keep files under var/ (loaddemo) write to a temporary one."""
    settings.VAR_DIR = tmp_path


@pytest.fixture
def clock():
    """Time stands still until a test moves it with ``after``."""
    import time_machine
    from django.utils import timezone

    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def users(db):
    model = get_user_model()
    return {
        name: model.objects.create_user(name, f"{name}@example.com", "pw")
        for name in ("maria", "tom", "carol", "olivia", "sam")
    }


@pytest.fixture
def config(users):
    return apply_documents(load_yaml(CONFIG), author="tests")


@pytest.fixture
def agent(config):
    return create_agent("billing-bot")


@pytest.fixture
def other_agent(config):
    return create_agent("other-bot")


@pytest.fixture
def root(config):
    """A superuser's browser session, for the admin."""
    from django.test import Client

    get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.login(username="root", password="pw")
    return client


@pytest.fixture
def bot(agent) -> APIClient:
    return agent_client(agent)


@pytest.fixture
def maria(users) -> APIClient:
    return reviewer_client(users["maria"])


@pytest.fixture
def tom(users) -> APIClient:
    return reviewer_client(users["tom"])


@pytest.fixture
def carol(users) -> APIClient:
    return reviewer_client(users["carol"])


@pytest.fixture
def olivia(users) -> APIClient:
    return reviewer_client(users["olivia"])


@pytest.fixture
def sam(users) -> APIClient:
    return reviewer_client(users["sam"])


@pytest.fixture
def invoice(bot) -> dict:
    """A pending invoice discrepancy, owned by the finance managers."""
    response = bot.post("/api/v1/requests", INVOICE, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- real processes (Celery worker and beat, a Redis of our own) ----------------------


@pytest.fixture
def engine_env(tmp_path):
    from django.db import connection

    database = connection.settings_dict
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "DJANGO_SETTINGS"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="approvals_site.settings",
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
        f"{database['NAME']}",
        APPROVALS_VAR_DIR=str(tmp_path),
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(tmp_path / "mail"),
        LOG_LEVEL="INFO",
    )
    return env


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def processes(tmp_path, engine_env, redis_server):
    """Worker and beat on a Redis of the test's own; this test process publishes
    there too (after-commit tasks), as the web processes would."""
    from approvals_site.celery import app

    engine_env["REDIS_URL"] = redis_server.url
    previous = app.conf.broker_url
    use_broker(app, redis_server.url)
    procs = Processes(tmp_path, engine_env)
    yield procs
    procs.stop_all()
    use_broker(app, previous)
