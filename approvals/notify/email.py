from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage

from approvals.notify import Message, Unreachable


class EmailChannel:
    """Through Django's mail framework: console in the demo, SMTP by environment."""

    def send(self, message: Message) -> None:
        if not message.recipients:
            raise Unreachable(
                f"role {message.role} has no email address and none of its members has one"
            )
        EmailMessage(
            subject=message.subject,
            body=message.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=message.recipients,
        ).send()
