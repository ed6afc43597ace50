"""What the tests share besides fixtures (those are in tests/conftest.py):
the configuration and request the stories use, and API clients."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from django.db import connection
from rest_framework.test import APIClient

from approvals.tokens import issue_token

CONFIG = """
kind: Role
name: finance-manager
members: [maria, tom]
---
kind: Role
name: cfo
members: [carol]
---
kind: Role
name: compliance-officer
members: [olivia]
---
kind: Role
name: support-lead
members: [sam]
---
kind: ActionClass
name: internal
sla: 2h
---
kind: ActionClass
name: customer-urgent
sla: 15m
---
kind: Policy
name: finance-invoices
priority: 100
rules:
  - name: invoice-discrepancy
    actions: ["invoice.discrepancy"]
    class: internal
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
    ticket: true
  - name: big-payment
    actions: ["payment.*"]
    class: internal
    approvals: 2
    editable: true
    levels:
      - {role: finance-manager, deadline: 30m}
      - {role: cfo, deadline: 2h}
---
kind: Policy
name: customer-refunds
priority: 10
rules:
  - name: refund-review
    actions: ["refund.*"]
    class: customer-urgent
    levels:
      - {role: support-lead, deadline: 15m}
    on_timeout: deny
"""

INVOICE = {
    "action": "invoice.discrepancy",
    "summary": "INV-1042 is $1,240 over PO-77",
    "context": {"amount": 1240.0, "currency": "USD", "invoice": "INV-1042", "vendor": "Acme"},
    "payload": {"invoice": "INV-1042", "pay": 1240.0},
    "requester": {"run_id": "run_81", "on_behalf_of": "sam"},
}


def another_session(*, autocommit: bool = True) -> psycopg.Connection:
    """A connection of its own to the test database, as another process would
    hold one: this connection's parameters, not its session (nor its pool)."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=autocommit)


def after(clock, **delta) -> None:
    clock.shift(timedelta(**delta))


def agent_client(credentials) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credentials.api_key}")
    return client


def reviewer_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user)}")
    return client


def decide(client: APIClient, request_id: str, outcome: str, **body):
    return client.post(
        f"/api/v1/requests/{request_id}/decision", {"outcome": outcome, **body}, format="json"
    )


def use_broker(app: Any, url: str) -> None:
    # The settings' own name: with celery 5.6 a change made as broker_url does
    # not override CELERY_BROKER_URL read from the Django settings.
    app.conf["CELERY_BROKER_URL"] = url
    app._pool = None  # the connection and producer pools were made for the old URL
    app.amqp._producer_pool = None


# Deadlines short enough for real-process tests: 2 s, then 2 s, then expired with a ticket.
FAST_CHAIN = """
kind: Policy
name: fast
priority: 1
rules:
  - name: two-plus-two
    actions: ["fast.*"]
    class: internal
    levels:
      - {role: finance-manager, deadline: 2s}
      - {role: cfo, deadline: 2s}
    ticket: true
"""
