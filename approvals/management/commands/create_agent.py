from __future__ import annotations

import json
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import URLValidator

from approvals.agents import create_agent
from approvals.audit import cli_actor
from approvals.callbacks import check_callback_url
from approvals.models import Agent
from approvals.outbound import UnsafeURL
from approvals.rates import Rate
from policies.spec import GLOB

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class Command(BaseCommand):
    help = "Create an agent; prints its API key and callback signing secret once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--callback-url", default="", help="Default callback URL.")
        parser.add_argument(
            "--actions", nargs="+", default=[], metavar="GLOB",
            help="Actions it may request (globs); default: all.",
        )  # fmt: skip
        parser.add_argument("--subscribe-escalations", action="store_true")
        parser.add_argument(
            "--rate-limit", default="", metavar="RATE",
            help="API calls allowed, e.g. 120/min (per s, min, h or day); default: the setting.",
        )  # fmt: skip
        parser.add_argument(
            "--max-waits", type=int, default=None, metavar="N",
            help="Concurrent ?wait=N calls allowed; default: the setting.",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(
        self, *args: Any, name: str, callback_url: str, actions: list[str], **options: Any
    ) -> None:
        if not NAME.match(name):
            raise CommandError("NAME may use letters, digits, '_', '.' and '-' (1-100).")
        if Agent.objects.filter(name=name).exists():
            raise CommandError(f"An agent named '{name}' already exists.")
        if callback_url:
            try:
                URLValidator(schemes=["http", "https"])(callback_url)
            except ValidationError:
                raise CommandError(f"--callback-url {callback_url!r} is not a URL.") from None
            try:
                check_callback_url(callback_url)
            except UnsafeURL as exc:
                raise CommandError(f"--callback-url: {exc}") from None
        bad = [glob for glob in actions if not GLOB.match(glob)]
        if bad:
            raise CommandError(f"--actions {', '.join(bad)}: use a-z 0-9 _ . : - and * ? [ ]")
        if options["rate_limit"]:
            try:
                Rate.parse(options["rate_limit"])
            except ValueError as exc:
                raise CommandError(f"--rate-limit: {exc}") from None
        if options["max_waits"] is not None and options["max_waits"] < 0:
            raise CommandError("--max-waits must be 0 or more.")
        credentials = create_agent(
            name,
            callback_url=callback_url,
            actions=actions,
            subscribe_escalations=options["subscribe_escalations"],
            rate_limit=options["rate_limit"],
            max_waits=options["max_waits"],
            actor=cli_actor("create_agent"),
        )
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "name": name,
                        "api_key": credentials.api_key,
                        "signing_secret": credentials.signing_secret,
                    }
                )
            )
            return
        self.stdout.write(f"Agent '{name}' created. Copy these now; they are not shown again.")
        self.stdout.write(f"API key:        {credentials.api_key}")
        self.stdout.write(f"Signing secret: {credentials.signing_secret}")
