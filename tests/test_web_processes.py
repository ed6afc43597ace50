"""The real web server (gunicorn with gunicorn.conf.py) against the test database:
long-polls, limits and keep-alive connections as an agent on the network sees them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from approvals.agents import create_agent
from approvals.api import throttling
from tests.helpers import INVOICE, agent_client, decide, reviewer_client
from tests.processes import Processes, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(engine_env, tmp_path):
    """gunicorn started as the README says, one worker, on a free port."""
    port = free_port()
    procs = Processes(tmp_path, engine_env)
    master = procs.start(
        "web", sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1"
    )
    wait_for(lambda: _answers(port), timeout=30, what="gunicorn to answer")
    yield Server(port, master.pid, procs)
    procs.stop_all()


class Server:
    def __init__(self, port: int, master_pid: int, procs: Processes):
        self.port, self.master_pid, self.procs = port, master_pid, procs

    def connection(self, timeout: float = 70) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, method: str, path: str, *, key: str = "", token: str = "", body=None):
        conn = self.connection()
        try:
            return _call(conn, method, path, key=key, token=token, body=body)
        finally:
            conn.close()

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children").read_text()
        return int(children.split()[0])

    def worker_threads(self) -> int:
        return len(os.listdir(f"/proc/{self.worker_pid()}/task"))


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/api/v1/schema")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _call(conn, method, path, *, key="", token="", body=None):
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if token:
        headers["Authorization"] = f"Token {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    content = response.read()
    return response, json.loads(content) if content else None


def _token(user) -> str:
    from approvals.tokens import issue_token

    return issue_token(user)


def _waits_held(agent) -> int:
    store = throttling.store()
    return store.client.zcard(f"countersign:waits:{agent.pk}")  # type: ignore[attr-defined]


def _pending(credentials) -> str:
    response = agent_client(credentials).post("/api/v1/requests", INVOICE, format="json")
    assert response.status_code == 201
    return response.json()["id"]


def test_a_wait_answers_right_after_the_decision_commits(web, config, users):
    bot = create_agent("billing-bot")
    request_id = _pending(bot)
    answer: dict = {}

    def wait():
        response, body = web.call("GET", f"/api/v1/requests/{request_id}?wait=30", key=bot.api_key)
        answer.update(status=response.status, body=body, at=time.monotonic())

    waiting = threading.Thread(target=wait)
    waiting.start()
    wait_for(lambda: _waits_held(bot.agent) == 1, timeout=10, what="the wait to be held")
    deciding = time.monotonic()
    assert decide(reviewer_client(users["maria"]), request_id, "approve").status_code == 200
    waiting.join(timeout=10)

    assert answer["status"] == 200
    assert answer["body"]["status"] == "approved"
    assert answer["body"]["decision"]["by"] == {"user": "maria", "role": "finance-manager"}
    assert answer["at"] - deciding < 1.0  # the bench measures the real figure (ms)
    wait_for(lambda: _waits_held(bot.agent) == 0, timeout=5, what="the slot to be released")


def test_200_waits_hold_no_threads_and_others_are_served_meanwhile(web, config, users):
    bot = create_agent("billing-bot", max_waits=250)
    requests = [_pending(bot) for _ in range(20)]
    answers: list[tuple[int, str]] = []
    # Threads the server starts once, not per wait (the connection pool's workers, the thread
    # for sync views, the listener), exist after one call and one wait that runs out.
    warm_up, body = web.call("GET", f"/api/v1/requests/{requests[0]}?wait=1", key=bot.api_key)
    assert (warm_up.status, body["status"]) == (200, "pending")
    threads_before = web.worker_threads()

    def wait(request_id):
        response, body = web.call("GET", f"/api/v1/requests/{request_id}?wait=60", key=bot.api_key)
        answers.append((response.status, body["status"]))

    waiting = [threading.Thread(target=wait, args=(requests[i % 20],)) for i in range(200)]
    for thread in waiting:
        thread.start()
    wait_for(lambda: _waits_held(bot.agent) == 200, timeout=60, what="200 waits held")

    # While they wait: a handful of threads in the server, a create and a decision promptly.
    assert web.worker_threads() <= threads_before + 10
    started = time.monotonic()
    created, body = web.call("POST", "/api/v1/requests", key=bot.api_key, body=INVOICE)
    assert created.status == 201
    decided, _ = web.call(
        "POST", f"/api/v1/requests/{body['id']}/decision",
        token=_token(users["maria"]), body={"outcome": "deny", "reason": "duplicate"},
    )  # fmt: skip
    assert decided.status == 200
    assert time.monotonic() - started < 2.0

    maria = reviewer_client(users["maria"])
    for request_id in requests:
        assert decide(maria, request_id, "approve").status_code == 200
    for thread in waiting:
        thread.join(timeout=30)
    assert answers == [(200, "approved")] * 200
    wait_for(lambda: _waits_held(bot.agent) == 0, timeout=5, what="all slots released")


def test_over_the_rate_an_agent_gets_429_with_retry_after(web, config):
    bot = create_agent("billing-bot", rate_limit="3/min")
    for _ in range(3):
        response, _ = web.call("GET", "/api/v1/requests", key=bot.api_key)
        assert response.status == 200
    response, body = web.call("GET", "/api/v1/requests", key=bot.api_key)

    assert response.status == 429
    assert body["code"] == "throttled"
    assert 1 <= int(response.getheader("Retry-After")) <= 20
    other = create_agent("other-bot")
    assert web.call("GET", "/api/v1/requests", key=other.api_key)[0].status == 200


def test_too_many_waits_get_429_and_a_dropped_wait_frees_its_slot(web, config):
    bot = create_agent("billing-bot", max_waits=1)
    request_id = _pending(bot)
    path = f"/api/v1/requests/{request_id}?wait=60"
    first = web.connection()
    first.request("GET", path, headers={"Authorization": f"Bearer {bot.api_key}"})
    wait_for(lambda: _waits_held(bot.agent) == 1, timeout=10, what="the first wait")

    response, body = web.call("GET", path, key=bot.api_key)
    assert response.status == 429
    assert body["code"] == "throttled"
    assert int(response.getheader("Retry-After")) >= 1

    first.sock.shutdown(socket.SHUT_RDWR)  # the agent goes away mid-wait
    first.close()
    wait_for(lambda: _waits_held(bot.agent) == 0, timeout=10, what="the slot to be released")
    response, body = web.call("GET", f"/api/v1/requests/{request_id}?wait=1", key=bot.api_key)
    assert (response.status, body.get("status")) == (200, "pending"), body


def test_answers_sent_before_reading_the_body_leave_the_connection_usable(web, config):
    bot = create_agent("billing-bot")
    conn = web.connection(timeout=10)
    big = json.dumps({**INVOICE, "context": {"blob": "x" * (300 * 1024)}}).encode()

    steps = [
        ("POST", "/api/v1/requests", {"key": bot.api_key, "body": big}, 413),
        ("POST", "/api/v1/requests", {"key": "cs_bad_key", "body": INVOICE}, 401),
        ("POST", "/api/v1/requests", {"key": bot.api_key, "body": b'{"action": '}, 400),
        ("POST", "/api/v1/requests", {"key": bot.api_key, "body": INVOICE}, 201),
    ]
    sock = None
    for method, path, kwargs, expected in steps * 3:
        response, body = _call(conn, method, path, **kwargs)
        assert (response.status, body.get("code") if expected != 201 else None) == (
            expected,
            {413: "too_large", 401: "authentication_failed", 400: "parse_error"}.get(expected),
        )
        assert sock is None or conn.sock is sock  # the same keep-alive connection
        sock = conn.sock


def test_a_huge_declared_body_gets_413_and_connection_close(web):
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk  # until the server closes: it does not wait for 100 MB

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == "too_large"


def test_on_the_embedded_default_a_wait_still_ends_with_the_decision(tmp_path):
    """SQLite, no Redis, two web processes: the wait checks its row instead of
    being notified, and the limits live in a file both processes share."""
    import subprocess

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL") and not key.startswith("PYTEST")
    }
    env.update(APPROVALS_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="approvals_site.settings")

    def manage(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args], env=env, capture_output=True, text=True,
            timeout=300, check=True, cwd=Path(__file__).resolve().parent.parent,
        ).stdout  # fmt: skip

    manage("migrate", "-v0")
    manage("loaddemo")
    key = json.loads((tmp_path / "demo-agent.json").read_text())["api_key"]
    token = manage("drf_create_token", "maria").split()[-1]
    port = free_port()
    procs = Processes(tmp_path, env)
    procs.start("web", sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2")
    try:
        wait_for(lambda: _answers(port), timeout=30, what="gunicorn on SQLite")
        web = Server(port, 0, procs)
        created, body = web.call("POST", "/api/v1/requests", key=key, body=INVOICE)
        assert created.status == 201
        answer: dict = {}

        def wait():
            _, found = web.call("GET", f"/api/v1/requests/{body['id']}?wait=20", key=key)
            answer.update(status=found["status"], at=time.monotonic())

        waiting = threading.Thread(target=wait)
        waiting.start()
        wait_for(lambda: _file_slots(tmp_path) == 1, timeout=10, what="the wait to be held")
        deciding = time.monotonic()
        decided, _ = web.call(
            "POST", f"/api/v1/requests/{body['id']}/decision", token=token,
            body={"outcome": "approve"},
        )  # fmt: skip
        assert decided.status == 200
        waiting.join(timeout=25)
        assert answer["status"] == "approved"
        assert answer["at"] - deciding < 3
    finally:
        procs.stop_all()


def _file_slots(var: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(var / "limits.sqlite3")) as db:
        return db.execute("SELECT count(*) FROM slot").fetchone()[0]
