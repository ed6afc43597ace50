"""Signing callbacks per the Standard Webhooks specification.

``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
one per secret, space-separated while a rotated secret is in its grace period.
The HMAC itself comes from the official ``standardwebhooks`` package.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(secret).sign(msg_id=webhook_id, timestamp=moment, data=body)


def signature_header(secrets: list[str], webhook_id: str, timestamp: int, body: str) -> str:
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets)


def headers(secrets: list[str], webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "Countersign-Webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, webhook_id, timestamp, body),
    }
