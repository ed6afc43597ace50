"""Creating agents and their credentials (the key is returned once, never stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals import audit
from approvals.keys import issue_api_key, issue_signing_secret
from approvals.models import Agent
from approvals.models import AuditKind as Kind


@dataclass(frozen=True)
class Credentials:
    agent: Agent
    api_key: str
    signing_secret: str


def create_agent(
    name: str,
    *,
    callback_url: str = "",
    actions: list[str] | None = None,
    subscribe_escalations: bool = False,
    rate_limit: str = "",
    max_waits: int | None = None,
    actor: dict | None = None,
) -> Credentials:
    agent = Agent(
        name=name,
        callback_url=callback_url,
        action_globs=list(actions or []),
        subscribe_escalations=subscribe_escalations,
        rate_limit=rate_limit,
        max_waits=max_waits,
    )
    return issue_credentials(agent, actor=actor)


def issue_credentials(
    agent: Agent, *, actor: dict | None = None, created: bool = True
) -> Credentials:
    """Give an agent (new or existing) a fresh API key and signing secret."""
    key = issue_api_key()
    agent.key_prefix, agent.key_hash = key.prefix, key.hashed
    agent.signing_secret = issue_signing_secret()
    with transaction.atomic():
        agent.save()
        kind = Kind.AGENT_CREATED if created else Kind.AGENT_CREDENTIALS_ISSUED
        _record(agent, kind, actor, callback_url=agent.callback_url, actions=agent.action_globs)
    return Credentials(agent=agent, api_key=key.key, signing_secret=agent.signing_secret)


def new_api_key(agent: Agent, *, actor: dict | None = None) -> str:
    """Replace only the API key (the signing secret has its own rotation)."""
    key = issue_api_key()
    agent.key_prefix, agent.key_hash = key.prefix, key.hashed
    with transaction.atomic():
        agent.save(update_fields=["key_prefix", "key_hash"])
        _record(agent, Kind.AGENT_KEY_ROTATED, actor, key_prefix=key.prefix)
    return key.key


def rotate_signing_secret(
    agent: Agent, *, grace_hours: float | None = None, actor: dict | None = None
) -> tuple[str, datetime]:
    """A new signing secret; the old one keeps signing until the grace ends."""
    grace = settings.APPROVALS_SECRET_GRACE_HOURS if grace_hours is None else grace_hours
    until = timezone.now() + timedelta(hours=grace)
    agent.previous_signing_secret = agent.signing_secret
    agent.previous_secret_expires_at = until
    agent.signing_secret = issue_signing_secret()
    with transaction.atomic():
        agent.save(
            update_fields=[
                "signing_secret",
                "previous_signing_secret",
                "previous_secret_expires_at",
            ]
        )
        _record(agent, Kind.AGENT_SECRET_ROTATED, actor, previous_valid_until=until.isoformat())
    return agent.signing_secret, until


def _record(agent: Agent, kind: Kind, actor: dict | None, **data: Any) -> None:
    # What changed and who did it; never the credential itself.
    audit.record_config(
        kind,
        actor=actor or {"system": "countersign"},
        summary=f"{kind.replace('_', ' ')}: {agent.name}",
        data={"agent": agent.name, **data},
    )
