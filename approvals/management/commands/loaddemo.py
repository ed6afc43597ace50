from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from approvals import actions, escalation
from approvals.agents import create_agent, new_api_key
from approvals.keys import key_matches
from approvals.models import Agent, ApprovalRequest, Status
from approvals.tokens import issue_token, user_for_token
from policies.config import apply_documents, load_yaml

# username -> full name; every demo password is "demo" (roles: examples/demo.yaml).
REVIEWERS = {
    "sam": "Sam Support",
    "priya": "Priya Patel",
    "maria": "Maria Garcia",
    "tom": "Tom Becker",
    "carol": "Carol Chen",
    "olivia": "Olivia Osei",
    "henry": "Henry Hall",
}
DEMO_PASSWORD = "demo"
AGENT = "demo-agent"

# The queue the demo opens on: (idempotency key, body, what happens to it once created).
# "soon": its deadline is moved to a few minutes away, so escalation can be watched;
# "expired": walked through its chain now, so an expired request with its ticket shows.
QUEUE: list[tuple[str, dict, str]] = [
    (
        "demo-seed:refund-4521",
        {
            "action": "refund.issue",
            "summary": "Refund order #4521 ($84.00): the blender arrived cracked",
            "context": {"amount": 84.0, "currency": "USD", "order": "4521",
                        "customer": "Dana Li", "photos": 2},
            "payload": {"order": "4521", "amount": 84.0, "method": "original-card"},
            "requester": {"run_id": "support-run-17", "on_behalf_of": "priya"},
        },
        "pending",
    ),
    (
        "demo-seed:invoice-2231",
        {
            "action": "invoice.discrepancy",
            "summary": "INV-2231 is $3,400.00 over PO-118 (Northwind Freight)",
            "context": {"amount": 3400.0, "currency": "USD", "invoice": "INV-2231",
                        "po": "PO-118", "vendor": "Northwind Freight"},
            "payload": {"invoice": "INV-2231", "pay": 15400.0},
            "requester": {"run_id": "ap-run-204"},
        },
        "soon",
    ),
    (
        "demo-seed:retention-180",
        {
            "action": "compliance.retention-change",
            "summary": "Shorten support chat retention from 365 to 180 days",
            "context": {"system": "support-chat", "from_days": 365, "to_days": 180,
                        "regions": ["EU", "US"]},
            "payload": {"system": "support-chat", "retention_days": 180},
            "requester": {"run_id": "policy-run-9"},
        },
        "pending",
    ),
    (
        "demo-seed:invoice-1987",
        {
            "action": "invoice.discrepancy",
            "summary": "INV-1987 is $12,900.00 over PO-102 (Acme Metals)",
            "context": {"amount": 12900.0, "currency": "USD", "invoice": "INV-1987",
                        "po": "PO-102", "vendor": "Acme Metals"},
            "payload": {"invoice": "INV-1987", "pay": 48900.0},
            "requester": {"run_id": "ap-run-188"},
        },
        "expired",
    ),
]  # fmt: skip
SOON = timedelta(minutes=3)


class Command(BaseCommand):
    help = "Load the demo organisation: users, roles, the seed's policies and a demo agent."

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            self._users()
            documents = load_yaml(
                (settings.BASE_DIR / "examples" / "demo.yaml").read_text(), "examples/demo.yaml"
            )
            outcome = apply_documents(documents, author="loaddemo")
            key, secret = self._agent()
        self._queue(Agent.objects.get(name=AGENT))
        for change in outcome.changes:
            self.stdout.write(f"  {change}")
        token = self._token()
        self.stdout.write(
            "\nDemo users (password 'demo'): "
            + ", ".join(REVIEWERS)
            + "; admin (password 'admin') for /admin/"
        )
        self.stdout.write(f"Reviewer token for maria:  {token}")
        self.stdout.write(f"Demo agent API key:        {key}")
        self.stdout.write(f"Demo agent signing secret: {secret}")

    def _users(self) -> None:
        users = get_user_model().objects
        for username, name in REVIEWERS.items():
            first, last = name.split(" ", 1)
            user, created = users.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@example.com",
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
        if not users.filter(username="admin").exists():
            users.create_superuser("admin", "admin@example.com", "admin")

    def _token(self) -> str:
        """Maria's token is kept in var/ (it is stored hashed) so every run can print it again."""
        saved = settings.VAR_DIR / "demo-token.json"
        token = json.loads(saved.read_text()).get("token", "") if saved.exists() else ""
        if not token or user_for_token(token) is None:
            token = issue_token(get_user_model().objects.get(username="maria"))
        saved.write_text(json.dumps({"user": "maria", "token": token}))
        saved.chmod(0o600)
        return token

    def _agent(self) -> tuple[str, str]:
        """The demo agent's key is kept in var/ so every run can print it again."""
        saved = settings.VAR_DIR / "demo-agent.json"
        agent = Agent.objects.filter(name=AGENT).first()
        if agent is None:
            credentials = create_agent(AGENT)
            key, secret = credentials.api_key, credentials.signing_secret
        else:
            known = json.loads(saved.read_text()) if saved.exists() else {}
            key = known.get("api_key", "")
            if not key or not key_matches(key, agent.key_hash):
                key = new_api_key(agent)
            secret = agent.signing_secret
        saved.write_text(json.dumps({"name": AGENT, "api_key": key, "signing_secret": secret}))
        saved.chmod(0o600)
        return key, secret

    def _queue(self, agent: Agent) -> None:
        """Seed the living queue once: a second run finds each request by its key."""
        for key, body, fate in QUEUE:
            result = actions.create_request(agent, body=body, idempotency_key=key)
            if not result.changed:
                continue
            if fate == "soon":
                _move_deadline(result.request.pk, timezone.now() + SOON)
            elif fate == "expired":
                # Through the engine's own steps, each just after its (moved) deadline,
                # so the timeline reads as it would have: escalated, then expired.
                for _ in range(len(body) + 10):  # bounded: a chain has a few levels
                    _move_deadline(result.request.pk, timezone.now() - timedelta(seconds=1))
                    request = ApprovalRequest.objects.select_related("owner_role", "agent").get(
                        pk=result.request.pk
                    )
                    if request.status != Status.PENDING:
                        break
                    with transaction.atomic():
                        escalation.handle_due(request)


def _move_deadline(pk: uuid.UUID, due_at: datetime) -> None:
    """Demo seeding only: the engine picks the new deadline up on its next sweep."""
    ApprovalRequest.objects.filter(pk=pk, status=Status.PENDING).update(due_at=due_at)
