"""Telling people: one small interface, channels configured by setting."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class Message:
    kind: str  # new | escalated | reminder | ticket
    role: str
    recipients: list[str]  # email addresses: the role's, or each member's
    subject: str
    body: str
    # The request's page (a digest's: the inbox): a link only opens it,
    # nothing is decided by a GET.
    url: str
    slack_webhook: str = ""  # the role's own channel, if it has one


class Unreachable(Exception):
    """Nobody can be reached through this channel (no address): retrying will
    not help, and the notification must not count as sent."""


class Channel(Protocol):
    def send(self, message: Message) -> None:
        """Deliver the message or raise; the caller records the error and retries
        (except Unreachable, which is final)."""


@cache
def channels() -> dict[str, Channel]:
    """The configured channels by their setting's path, which names each
    channel's outcome on a notification."""
    return {path: import_string(path)() for path in settings.APPROVALS_NOTIFICATION_CHANNELS}
