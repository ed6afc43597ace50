from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.agents import new_api_key
from approvals.audit import cli_actor
from approvals.models import Agent


class Command(BaseCommand):
    help = "Issue a new API key for an agent, printed once; the old key stops working at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        agent = Agent.objects.filter(name=name).first()
        if agent is None:
            raise CommandError(f"No agent named '{name}'.")
        key = new_api_key(agent, actor=cli_actor("rotate_agent_key"))
        self.stdout.write(f"New API key for '{name}' (the old one no longer works): {key}")
