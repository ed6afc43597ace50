from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.tokens import issue_token


class Command(BaseCommand):
    help = (
        "Print a new API token for a reviewer (shown once; stored only as a hash). "
        "With --reset the user's other tokens stop working."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "-r", "--reset", action="store_true", help="Revoke the user's other tokens."
        )
        parser.add_argument("--days", type=float, default=None, help="Lifetime (default 90).")

    def handle(
        self, *args: Any, username: str, reset: bool, days: float | None, **options: Any
    ) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named '{username}'.")
        if days is not None and days <= 0:
            raise CommandError("--days must be positive.")
        token = issue_token(user, days=days, replace=reset)
        # The token is the last word of the line, whatever the scheme (README, Commands).
        self.stdout.write(f"Generated token for user {username}: {token}")
