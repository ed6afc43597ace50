from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from policies.config import dump_yaml, export_documents


class Command(BaseCommand):
    help = "Print the whole configuration as YAML, in the format that apply reads."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(dump_yaml(export_documents()), ending="")
