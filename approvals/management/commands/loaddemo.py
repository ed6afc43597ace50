from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from approvals.agents import create_agent, new_api_key
from approvals.keys import key_matches
from approvals.models import Agent
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


class Command(BaseCommand):
    help = "Load the demo organisation: users, roles, the seed's policies and a demo agent."

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            self._users()
            documents = load_yaml(
                (settings.BASE_DIR / "examples" / "demo.yaml").read_text(), "examples/demo.yaml"
            )
            outcome = apply_documents(documents, author="loaddemo")
            key, secret = self._agent()
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
