"""Property-based fuzzing of the whole API from its own OpenAPI schema.

Schemathesis generates bodies, parameters and headers from the schema (and
breaks them on purpose); whatever it sends, the API must answer without a 5xx.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from approvals.tokens import issue_token
from approvals_site.wsgi import application
from tests.helpers import INVOICE

schema = schemathesis.openapi.from_wsgi("/api/v1/schema", application)


@contextmanager
def keeping_the_test_connection():
    # Called straight through WSGI, each request would end by closing the test's
    # database connection; Django's own test client avoids that the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def credentials(agent, users):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent.api_key}")
    existing = client.post("/api/v1/requests", INVOICE, format="json").json()
    done = client.post("/api/v1/requests", INVOICE, format="json").json()
    client.post(f"/api/v1/requests/{done['id']}/cancel")
    return {
        "done_id": done["id"],
        "agent": f"Bearer {agent.api_key}",
        "reviewer": f"Token {issue_token(users['maria'])}",
        "staff": f"Token {issue_token(_staff())}",
        "request_id": existing["id"],
    }


def _staff():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("ops", is_staff=True)


AGENT_OPERATIONS = {"create_request", "list_requests", "get_request", "cancel_request"}


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_never_answers_5xx(case, credentials):
    operation = case.operation.definition.raw.get("operationId")
    who = "agent" if operation in AGENT_OPERATIONS else "reviewer"
    who = "staff" if operation == "simulate" else who
    headers = {"Authorization": credentials[who]}
    if case.path_parameters and "id" in case.path_parameters:
        # A random UUID only ever finds 404; aim the fuzzing at real requests. Reads
        # go to a cancelled one so that ?wait=N answers at once.
        which = "done_id" if operation == "get_request" else "request_id"
        case.path_parameters["id"] = credentials[which]
    with keeping_the_test_connection():
        response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
