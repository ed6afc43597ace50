"""The OpenAPI schema describes every endpoint; the docs page renders it offline."""

from __future__ import annotations

from django.test import Client


def test_the_schema_lists_every_operation_with_its_errors(db):
    schema = Client().get("/api/v1/schema").json()

    assert schema["openapi"].startswith("3.")
    operations = {
        op["operationId"]: op for path in schema["paths"].values() for op in path.values()
    }
    assert set(operations) == {
        "create_request", "list_requests", "get_request", "cancel_request",
        "decide", "claim", "unclaim", "simulate", "export_audit",
    }  # fmt: skip
    assert {"201", "200", "400", "401", "403", "409", "413", "422"} <= set(
        operations["create_request"]["responses"]
    )
    assert "409" in operations["decide"]["responses"]
    assert "agentKey" in schema["components"]["securitySchemes"]


def test_the_docs_page_renders_without_a_cdn(db):
    page = Client().get("/api/docs")
    assert page.status_code == 200
    assert b"/static/drf_spectacular_sidecar/" in page.content
    assert b"cdn." not in page.content
