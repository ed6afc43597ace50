from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from policies.simulate import simulate


class Command(BaseCommand):
    help = "Show which policy, version and rule would route a request; nothing is stored."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-f", "--file", required=True, help="A request body as JSON ('-' reads stdin)."
        )
        parser.add_argument("--agent", default="", help="Agent name, as conditions see it.")

    def handle(self, *args: Any, file: str, agent: str, **options: Any) -> None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
            body = json.loads(text)
        except OSError as exc:
            raise CommandError(f"{file}: cannot read ({exc.strerror})") from None
        except ValueError as exc:
            raise CommandError(f"{file}: not valid JSON ({exc})") from None
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise CommandError(f'{file}: give a JSON object with at least an "action"')
        self.stdout.write(json.dumps(simulate(body, agent=agent), indent=2))
