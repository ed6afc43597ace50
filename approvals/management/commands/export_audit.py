from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.audit_export import ExportError, Filters, lines


class Command(BaseCommand):
    help = "Stream the audit trail to standard output, oldest first, in constant memory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601 time (inclusive)")
        parser.add_argument("--until", help="ISO 8601 time (exclusive)")
        parser.add_argument("--action", help="glob on the request's action, e.g. invoice.*")
        parser.add_argument("--role", help="the role that owned the request at the event")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            filters = Filters.parse({key: options.get(key) for key in Filters.__annotations__})
        except ExportError as exc:
            raise CommandError(f"--{exc.field}: {exc}") from None
        # Straight to the stream, a chunk at a time: nothing accumulates here.
        for text in lines(filters):
            self.stdout.write(text, ending="")
