from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from approvals import audit
from approvals.models import AuditEvent


class Command(BaseCommand):
    help = "Check that the audit trail has not been altered; exit 1 at the first bad event."

    def handle(self, *args, **options) -> None:
        breach = next(audit.verify(), None)
        if breach is not None:
            where = f"event #{breach.seq}" if breach.seq else "its events"
            raise CommandError(
                f"audit trail broken: request {breach.request_id}, {where}: {breach.problem}",
                returncode=1,
            )
        count = AuditEvent.objects.count()
        self.stdout.write(f"audit trail intact: {count} event(s) verified")
