"""Bad input gets a clear JSON error: never a 500, never a half-written request."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest
from tests.helpers import INVOICE


def post_raw(client: APIClient, body: bytes | str, content_type="application/json"):
    return client.generic("POST", "/api/v1/requests", body, content_type=content_type)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"",
        b"[1, 2]",
        b'"just a string"',
        b"\xff\xfe not utf-8",
        b'{"action": "invoice.discrepancy", "summary": "x", "context": {"a": NaN}}',
        b'{"action": "invoice.discrepancy", "summary": "x", "context": {"a": 1e999}}',
    ],
)
def test_malformed_bodies_are_400(bot, body):
    response = post_raw(bot, body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert {"code", "detail"} <= set(response.json())
    assert not ApprovalRequest.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("action", 42),
        ("action", "Invoice Discrepancy!"),
        ("action", "a" * 101),
        ("summary", ""),
        ("summary", 12),
        ("summary", "x" * 501),
        ("context", ["not", "an", "object"]),
        ("payload", "text"),
        ("requester", {"on_behalf_of": 7}),
        ("callback_url", "not a url"),
    ],
)
def test_wrong_types_are_field_errors(bot, field, value):
    response = bot.post("/api/v1/requests", {**INVOICE, field: value}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert any(key.split(".")[0] == field for key in body["errors"])


def test_missing_fields_are_named(bot):
    response = bot.post("/api/v1/requests", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"action", "summary"}


def test_unknown_fields_are_refused_rather_than_dropped(bot):
    response = bot.post("/api/v1/requests", {**INVOICE, "contxt": {"a": 1}}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"contxt": ["Unknown field."]}


def test_an_oversized_body_is_413(bot):
    body = {**INVOICE, "context": {"blob": "x" * (256 * 1024)}}
    response = bot.post("/api/v1/requests", body, format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


def test_a_body_just_under_the_limit_is_accepted(bot):
    body = {**INVOICE, "context": {"blob": "x" * (250 * 1024)}}
    assert bot.post("/api/v1/requests", body, format="json").status_code == 201


def test_deeply_nested_context_is_refused(bot):
    deep: dict = {}
    for _ in range(40):
        deep = {"d": deep}
    response = bot.post("/api/v1/requests", {**INVOICE, "context": deep}, format="json")
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]


def test_pathologically_nested_json_is_a_400_not_a_crash(bot):
    response = post_raw(bot, "[" * 100_000 + "]" * 100_000)
    assert response.status_code == 400


@pytest.mark.parametrize("text", ["nul \u0000 byte", "lone \ud800 surrogate"])
def test_text_postgres_cannot_store_is_refused(bot, text):
    body = json.dumps({**INVOICE, "context": {"note": text}}, ensure_ascii=True)
    response = post_raw(bot, body)
    assert response.status_code == 400
    assert not ApprovalRequest.objects.exists()


def test_a_decision_with_a_wrong_outcome_is_a_field_error(maria, invoice):
    response = maria.post(
        f"/api/v1/requests/{invoice['id']}/decision", {"outcome": "maybe"}, format="json"
    )
    assert response.status_code == 400
    assert "outcome" in response.json()["errors"]


def test_a_malformed_request_id_is_404_json(bot):
    response = bot.get("/api/v1/requests/not-a-uuid")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_wrong_method_is_405_json(bot):
    response = bot.delete("/api/v1/requests")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_a_form_encoded_body_is_415_json(bot):
    response = post_raw(bot, "action=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
