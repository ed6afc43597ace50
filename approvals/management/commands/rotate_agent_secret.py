from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.agents import rotate_signing_secret
from approvals.audit import cli_actor
from approvals.models import Agent


class Command(BaseCommand):
    help = (
        "Issue a new callback signing secret. For a grace period (24 h by default) callbacks "
        "carry signatures with both secrets, so receivers can switch without downtime."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--grace-hours", type=float, default=None)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, name: str, grace_hours: float | None, **options: Any) -> None:
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise CommandError(f"No agent named '{name}'.")
        secret, until = rotate_signing_secret(
            agent, grace_hours=grace_hours, actor=cli_actor("rotate_agent_secret")
        )
        if options["json"]:
            payload = {"name": name, "signing_secret": secret, "previous_valid_until": until}
            self.stdout.write(json.dumps(payload, default=str))
            return
        self.stdout.write(f"New signing secret for '{name}': {secret}")
        self.stdout.write(
            f"The previous secret also signs callbacks until {until:%Y-%m-%d %H:%M} UTC."
        )
