from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from approvals import audit


class Command(BaseCommand):
    help = (
        "Check that the audit trail has not been altered: every chain, every request row "
        "against its chain, no request missing. Exit 1 at the first problem."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        summary = audit.Summary()
        breach = next(audit.verify(summary), None)
        if breach is not None:
            where = f"event #{breach.seq}" if breach.seq else "its events"
            what = (
                f"request {breach.request_id}"
                if breach.request_id[:1] != "("
                else breach.request_id[1:-1]
            )
            raise CommandError(
                f"audit trail broken: {what}, {where}: {breach.problem}", returncode=1
            )
        self.stdout.write(f"audit trail intact: {summary.events} event(s) verified")
        # Heads to note down elsewhere: a later run that prints fewer requests
        # or another configuration head than noted means history was cut.
        sealed = summary.sealed_upto.isoformat() if summary.sealed_upto else "-"
        self.stdout.write(
            f"requests: {summary.requests}; configuration events: {summary.config_events}, "
            f"head {summary.config_head or '-'}; seals: {summary.seals}, up to {sealed}, "
            f"head {summary.seal_head or '-'}"
        )
