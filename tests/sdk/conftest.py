"""A live Countersign for the SDK's tests: a real web process (runserver), a
Celery worker and beat, on the test database and a Redis of their own, started
once for this directory. Each test writes its policies, agents and reviewers
through the ORM (committed: the tests are transactional) and then talks to the
server over HTTP only, like an agent would."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import httpx
import pytest
from django.contrib.auth import get_user_model

from approvals.agents import create_agent
from approvals.tokens import issue_token
from policies.config import apply_documents, load_yaml
from tests.helpers import CONFIG, use_broker
from tests.processes import Processes, RedisServer, free_port, wait_for

try:  # reviewer tokens stored as hashes (approvals.tokens), where that has landed
    from approvals.tokens import issue_token
except ImportError:  # DRF's own tokens before that

    def issue_token(user) -> str:
        from rest_framework.authtoken.models import Token

        return Token.objects.get_or_create(user=user)[0].key


SDK_CONFIG = """
---
kind: Policy
name: sdk-tests
priority: 5
rules:
  - name: editable-transfer
    actions: ["transfer.*"]
    class: internal
    editable: true
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
  - name: quick-expiry
    actions: ["quick.*"]
    class: customer-urgent
    levels:
      - {role: support-lead, deadline: 2s}
    on_timeout: expire
    ticket: true
"""


@dataclass
class Live:
    url: str
    processes: Processes
    port: int

    def start_web(self) -> None:
        self.processes.start(
            "web", sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}",
        )  # fmt: skip
        wait_for(self._answers, timeout=60, what="the web server")

    def stop_web(self) -> None:
        self.processes.kill("web")

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/api/v1/schema", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="package")
def countersign_server(django_db_setup, django_db_blocker, tmp_path_factory):
    from django.db import connection

    from approvals_site.celery import app

    logs = tmp_path_factory.mktemp("live")
    database = connection.settings_dict
    redis = RedisServer(logs)
    redis.start()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "DJANGO_SETTINGS", "COUNTERSIGN_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="approvals_site.settings",
        DATABASE_URL=f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
        f"{database['NAME']}",
        REDIS_URL=redis.url,
        APPROVALS_VAR_DIR=str(logs),
        APPROVALS_ALLOW_PRIVATE_CALLBACKS="true",
        APPROVALS_CALLBACK_SCHEDULE="0,1,1",
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(logs / "mail"),
        LOG_LEVEL="INFO",
        DEBUG="false",
    )
    previous = app.conf.broker_url
    use_broker(app, redis.url)
    processes = Processes(logs, env)
    port = free_port()
    live = Live(url=f"http://127.0.0.1:{port}", processes=processes, port=port)
    try:
        processes.worker()
        processes.beat()
        live.start_web()
        wait_for(lambda: "ready" in processes.log("worker"), timeout=60, what="worker ready")
        yield live
    finally:
        processes.stop_all()
        redis.stop()
        use_broker(app, previous)


@dataclass
class World:
    """What one test set up on the live server: agents' keys and reviewers' tokens."""

    url: str
    live: Live
    api_key: str
    signing_secret: str
    narrow_key: str
    tokens: dict[str, str]

    def decide(self, reviewer: str, request_id: str, outcome: str, **body) -> httpx.Response:
        response = httpx.post(
            f"{self.url}/api/v1/requests/{request_id}/decision",
            json={"outcome": outcome, **body},
            headers={"Authorization": f"Token {self.tokens[reviewer]}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response

    def client(self, **options):
        from countersign_sdk import Countersign

        return Countersign(self.api_key, self.url, **options)

    def async_client(self, **options):
        from countersign_sdk import AsyncCountersign

        return AsyncCountersign(self.api_key, self.url, **options)


@pytest.fixture
def world(countersign_server, transactional_db) -> World:
    users = get_user_model()
    for name in ("maria", "tom", "carol", "olivia", "sam"):
        users.objects.create_user(name, f"{name}@example.com", "pw")
    apply_documents(load_yaml(CONFIG + SDK_CONFIG), author="tests")
    bot = create_agent("sdk-bot")
    narrow = create_agent("narrow-bot", actions=["refund.*"])
    tokens = {
        name: issue_token(users.objects.get(username=name))
        for name in ("maria", "tom", "carol", "sam", "olivia")
    }
    return World(
        url=countersign_server.url,
        live=countersign_server,
        api_key=bot.api_key,
        signing_secret=bot.signing_secret,
        narrow_key=narrow.api_key,
        tokens=tokens,
    )
