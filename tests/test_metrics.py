"""``/metrics``: the README's series in the Prometheus text format, behind
METRICS_TOKEN, the same figures whichever process answers."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from approvals import escalation
from tests.helpers import INVOICE, decide
from tests.processes import free_port, wait_for

TOKEN = "scrape-me-please"


def scrape(client: Client) -> dict[str, dict]:
    """{series name: {frozenset(labels): value}} from the text format."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> dict[str, dict]:
    series: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(sample.labels.items())
            series.setdefault(sample.name, {})[labels] = sample.value
    return series


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN


def test_without_a_token_configured_metrics_is_404(db, settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


def test_a_wrong_or_missing_token_is_refused(db, metrics_on):
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401


def test_the_contract_series_tell_the_story(metrics_on, bot, maria, carol):
    """Three invoices: maria denies one after 10 minutes, one escalates to the
    CFO who approves it, one is still pending with the finance managers."""
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        ids = [
            bot.post("/api/v1/requests", {**INVOICE, "summary": f"#{n}"}, format="json").json()[
                "id"
            ]
            for n in range(3)
        ]
        clock.shift(timedelta(minutes=10))
        decide(maria, ids[0], "deny", reason="duplicate")
        clock.shift(timedelta(minutes=21))
        escalation.sweep()  # ids[1] and ids[2] escalate to the CFO
        decide(carol, ids[1], "approve")
        series = scrape(Client())

    assert series["countersign_requests_created_total"] == {frozenset(): 3}
    outcomes = series["countersign_decisions_total"]
    assert outcomes[frozenset({("outcome", "denied")})] == 1
    assert outcomes[frozenset({("outcome", "approved")})] == 1
    assert outcomes[frozenset({("outcome", "expired")})] == 0
    assert series["countersign_escalations_total"] == {frozenset(): 2}
    assert series["countersign_pending_requests"] == {frozenset({("role", "cfo")}): 1}
    histogram = series["countersign_time_to_decision_seconds_bucket"]
    internal = {dict(k)["le"]: v for k, v in histogram.items() if dict(k)["class"] == "internal"}
    assert internal["300.0"] == 0 and internal["600.0"] == 1 and internal["1800.0"] == 1
    assert internal["2700.0"] == 2 and internal["+Inf"] == 2
    total = series["countersign_time_to_decision_seconds_sum"]
    assert total[frozenset({("class", "internal")})] == pytest.approx(600 + 31 * 60)
    assert series["countersign_sweep_lag_seconds"] == {frozenset(): 0.0}
    final = series["countersign_final_deadline_seconds"][frozenset()]
    assert final == pytest.approx(2 * 3600)  # ids[2] is at its last level, fresh
    assert "countersign_callback_deliveries_total" in series


def test_sweep_lag_shows_a_deadline_the_engine_has_not_handled(metrics_on, invoice):
    with time_machine.travel(timezone.now() + timedelta(minutes=31), tick=False):
        lag = scrape(Client())["countersign_sweep_lag_seconds"][frozenset()]
    assert lag == pytest.approx(60, abs=1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_web_workers_and_the_engine_agree(config, agent, processes, tmp_path):
    """gunicorn with two workers, a Celery worker and beat: whichever web
    worker answers, the figures are the ones in the database."""
    from policies.config import apply_documents, load_yaml

    apply_documents(
        load_yaml(
            """
kind: Policy
name: fast
priority: 1
rules:
  - name: quick
    actions: ["quick.*"]
    class: internal
    levels:
      - {role: finance-manager, deadline: 2s}
      - {role: cfo, deadline: 1h}
"""
        ),
        author="tests",
    )
    port = free_port()
    processes.env["METRICS_TOKEN"] = TOKEN
    processes.start(
        "web", sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2",
    )  # fmt: skip
    processes.worker()
    processes.beat()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), timeout=60, what="gunicorn")
    for n in range(3):
        body = {"action": "quick.thing", "summary": f"quick {n}"}
        status, _ = _http(f"{base}/api/v1/requests", agent.api_key, body)
        assert status == 201

    def escalated_everywhere():
        scrapes = [parse(_http(f"{base}/metrics", TOKEN)[1]) for _ in range(6)]
        values = {s["countersign_escalations_total"][frozenset()] for s in scrapes}
        return values == {3.0} and scrapes

    scrapes = wait_for(escalated_everywhere, timeout=30, what="three escalations, seen by all")
    for series in scrapes:
        assert series["countersign_requests_created_total"] == {frozenset(): 3}
        assert series["countersign_pending_requests"] == {frozenset({("role", "cfo")}): 3}


def _http(url: str, token: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}"})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _answers(base: str) -> bool:
    try:
        return _http(f"{base}/metrics", "")[0] == 401
    except OSError:
        return False
