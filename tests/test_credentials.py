"""Credentials at rest: reviewer tokens and agent keys are stored only as hashes,
expire or rotate, and the old ones stop working."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from approvals.models import ReviewerToken
from tests.helpers import agent_client


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def status(client: APIClient, invoice: dict) -> int:
    """What a reviewer API call answers with these credentials (a claim, repeatable)."""
    return client.post(f"/api/v1/requests/{invoice['id']}/claim").status_code


def test_a_created_token_is_the_last_word_and_works(invoice):
    out = run("drf_create_token", "maria")
    token = out.strip().splitlines()[-1].split()[-1]
    assert status(token_client(token), invoice) == 200


def test_tokens_are_stored_only_as_a_hash(config):
    token = run("drf_create_token", "maria").split()[-1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM approvals_reviewertoken")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert token not in stored
    assert token.split("_")[1] in stored  # the prefix, to find it


def test_no_admin_page_lists_tokens(root):
    assert root.get("/admin/authtoken/token/").status_code == 404
    assert b"oken" not in root.get("/admin/").content.split(b"<h1")[-1].split(b"Recent")[0]


def test_an_expired_token_stops_working(invoice):
    token = run("drf_create_token", "maria", "--days", "1").split()[-1]
    client = token_client(token)
    assert status(client, invoice) == 200
    with time_machine.travel(timedelta(days=1, minutes=1)):
        assert status(client, invoice) == 401


def test_reset_and_revoke_end_the_old_tokens(invoice):
    first = token_client(run("drf_create_token", "maria").split()[-1])
    second_token = run("drf_create_token", "maria", "--reset").split()[-1]
    assert status(first, invoice) == 401
    assert status(token_client(second_token), invoice) == 200
    run("revoke_tokens", "maria")
    assert status(token_client(second_token), invoice) == 401
    assert ReviewerToken.objects.filter(revoked_at__isnull=True).count() == 0


def test_a_deactivated_users_token_stops_working(invoice):
    client = token_client(run("drf_create_token", "maria").split()[-1])
    get_user_model().objects.filter(username="maria").update(is_active=False)
    assert status(client, invoice) == 401


def test_a_forged_token_with_a_real_prefix_fails(invoice):
    token = run("drf_create_token", "maria").split()[-1]
    kind, prefix, _ = token.split("_", 2)
    assert status(token_client(f"{kind}_{prefix}_forged"), invoice) == 401


def test_rotate_agent_key_prints_a_new_key_once_and_the_old_one_stops(agent):
    old = agent_client(agent)
    assert old.get("/api/v1/requests").status_code == 200
    key = run("rotate_agent_key", "billing-bot").split()[-1]
    assert old.get("/api/v1/requests").status_code == 401
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert fresh.get("/api/v1/requests").status_code == 200
