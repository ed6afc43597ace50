"""Creating agents and their credentials (the key is returned once, never stored)."""

from __future__ import annotations

from dataclasses import dataclass

from approvals.keys import issue_api_key, issue_signing_secret
from approvals.models import Agent


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
) -> Credentials:
    agent = Agent(
        name=name,
        callback_url=callback_url,
        action_globs=list(actions or []),
        subscribe_escalations=subscribe_escalations,
    )
    return issue_credentials(agent)


def issue_credentials(agent: Agent) -> Credentials:
    """Give an agent (new or existing) a fresh API key and signing secret."""
    key = issue_api_key()
    agent.key_prefix, agent.key_hash = key.prefix, key.hashed
    agent.signing_secret = issue_signing_secret()
    agent.save()
    return Credentials(agent=agent, api_key=key.key, signing_secret=agent.signing_secret)


def new_api_key(agent: Agent) -> str:
    """Replace only the API key (the signing secret has its own rotation)."""
    key = issue_api_key()
    agent.key_prefix, agent.key_hash = key.prefix, key.hashed
    agent.save(update_fields=["key_prefix", "key_hash"])
    return key.key
