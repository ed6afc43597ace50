"""Countersign for agents: pause for a human approval, resume on the decision.

from countersign_sdk import Countersign
cs = Countersign()   # COUNTERSIGN_URL, COUNTERSIGN_API_KEY
req = cs.requests.create(action="invoice.pay", summary="Pay INV-1042", payload={...})
req = cs.requests.wait(req.id, timeout=3600)
if req.status == "approved" and req.decision.verify(): pay(**req.decision.payload)
"""

from __future__ import annotations

__version__ = "0.1.0"

from countersign_sdk.client import AsyncCountersign, Countersign
from countersign_sdk.decorator import requires_approval
from countersign_sdk.errors import (
    APIConnectionError,
    APIError,
    ApprovalCancelled,
    ApprovalDenied,
    ApprovalError,
    ApprovalExpired,
    AuthenticationError,
    ConditionError,
    ConflictError,
    CountersignError,
    InvalidRequestError,
    NoPolicyError,
    NotFoundError,
    PayloadMismatchError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerError,
    ThrottledError,
    WaitTimeout,
)
from countersign_sdk.models import (
    ApprovalRequest,
    Decision,
    Level,
    Page,
    PolicyRef,
    Ticket,
    WebhookEvent,
)
from countersign_sdk.webhooks import (
    MemoryStore,
    RedisStore,
    Webhook,
    WebhookVerificationError,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "ApprovalCancelled",
    "ApprovalDenied",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalRequest",
    "AsyncCountersign",
    "AuthenticationError",
    "ConditionError",
    "ConflictError",
    "Countersign",
    "CountersignError",
    "Decision",
    "InvalidRequestError",
    "Level",
    "MemoryStore",
    "NoPolicyError",
    "NotFoundError",
    "Page",
    "PayloadMismatchError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PolicyRef",
    "RedisStore",
    "ServerError",
    "ThrottledError",
    "Ticket",
    "WaitTimeout",
    "Webhook",
    "WebhookEvent",
    "WebhookVerificationError",
    "requires_approval",
]
