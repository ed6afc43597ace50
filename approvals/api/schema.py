"""Teach drf-spectacular how agents authenticate."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AgentKeyScheme(OpenApiAuthenticationExtension):
    target_class = "approvals.api.authentication.AgentKeyAuthentication"
    name = "agentKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An agent's API key."}


class ReviewerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "approvals.api.authentication.ReviewerTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A reviewer's token: 'Token <token>' (manage.py drf_create_token USER).",
        }
