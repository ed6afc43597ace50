from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from policies.config import ConfigError, apply_documents, load_yaml


class Command(BaseCommand):
    help = "Apply roles, action classes and policies from YAML files, all in one transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-f", "--file", dest="files", action="append", required=True, metavar="FILE",
            help="A YAML file (multi-document); repeat for several; '-' reads standard input.",
        )  # fmt: skip
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would change; write nothing."
        )
        parser.add_argument("--author", help="Recorded on new policy versions (default: you).")

    def handle(
        self, *args: Any, files: list[str], dry_run: bool, author: str | None, **options: Any
    ) -> None:
        documents = []
        errors = []
        for name in files:
            try:
                text = sys.stdin.read() if name == "-" else Path(name).read_text()
                documents += load_yaml(text, source=name)
            except OSError as exc:
                errors.append(f"{name}: cannot read ({exc.strerror})")
            except ConfigError as exc:
                errors += exc.errors
        if not errors:
            try:
                outcome = apply_documents(documents, author=author or _whoami(), dry_run=dry_run)
            except ConfigError as exc:
                errors = exc.errors
        if errors:
            for error in errors:
                self.stderr.write(self.style.ERROR(f"error: {error}"))
            raise CommandError(f"{len(errors)} error(s); nothing was written.")

        for warning in outcome.report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        prefix = "would " if dry_run else ""
        for change in outcome.changes:
            self.stdout.write(f"{prefix}{change}")
        if not outcome.changes:
            self.stdout.write("no changes")
        elif dry_run:
            self.stdout.write("dry run: nothing was written")


def _whoami() -> str:
    try:
        return f"apply:{getpass.getuser()}"
    except (KeyError, OSError):
        return "apply"
