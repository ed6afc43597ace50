"""Agents authenticate with ``Authorization: Bearer <api key>``."""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from approvals.keys import key_matches, split_prefix
from approvals.models import Agent
from approvals.tokens import user_for_token


class AgentPrincipal:
    """Stands in for ``request.user`` on the agent API; the agent is ``request.auth``."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, agent: Agent):
        self.agent = agent

    def __str__(self) -> str:
        return f"agent:{self.agent.name}"


class AgentKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid API key.") from None
        prefix = split_prefix(key)
        agent = Agent.objects.filter(key_prefix=prefix, is_active=True).first() if prefix else None
        if agent is None or not key_matches(key, agent.key_hash):
            raise AuthenticationFailed("Invalid API key.")
        return AgentPrincipal(agent), agent

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="agents"'


class IsAgent(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, Agent)


class ReviewerTokenAuthentication(BaseAuthentication):
    """Reviewers authenticate with ``Authorization: Token <token>`` (hashed at rest)."""

    keyword = b"token"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise AuthenticationFailed("Use 'Authorization: Token <token>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid token.") from None
        user = user_for_token(key)
        if user is None:
            raise AuthenticationFailed("Invalid, expired or revoked token.")
        return user, key

    def authenticate_header(self, request: Request) -> str:
        return "Token"
