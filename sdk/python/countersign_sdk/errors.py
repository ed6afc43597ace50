"""Typed errors: one class per API error code, and one per outcome that is not
an approval. Catch ``CountersignError`` for all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from countersign_sdk.models import ApprovalRequest, Ticket


class CountersignError(Exception):
    """Anything this SDK raises."""


class APIConnectionError(CountersignError):
    """The server could not be reached (after the retries), or did not answer in time."""


class APIError(CountersignError):
    """The server answered with an error: ``{"code", "detail", "errors"?}`` (README, API)."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        errors: dict[str, list[str]] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {detail}")
        self.status_code, self.code, self.detail = status_code, code, detail
        self.errors = errors or {}
        self.body = body


class InvalidRequestError(APIError):
    """400: field errors, in ``errors`` (``{"field": ["message"]}``)."""


class AuthenticationError(APIError):
    """401: no API key, or a wrong one."""


class PermissionDeniedError(APIError):
    """403: e.g. an action outside the agent's globs."""


class NotFoundError(APIError):
    """404: no such request, or another agent's."""


class ConflictError(APIError):
    """409: an Idempotency-Key reused with another body, or a request already terminal
    (then ``request`` is the request as it stands)."""

    request: ApprovalRequest | None = None


class PayloadTooLargeError(APIError):
    """413: the body is over 256 KiB."""


class NoPolicyError(APIError):
    """422 ``no_policy``: no rule matches the action; nothing was created (fail closed)."""


class ConditionError(APIError):
    """422 ``condition_error``: a rule's condition could not be evaluated on this request's
    data (or its policy is broken); nothing was created (fail closed)."""


class ThrottledError(APIError):
    """429: over a limit; ``retry_after`` is the seconds the server asks us to wait."""

    retry_after: float | None = None


class ServerError(APIError):
    """5xx, after the retries."""


class PayloadMismatchError(CountersignError):
    """The approved payload does not hash to the decision's ``payload_sha256``."""


class ApprovalError(CountersignError):
    """The request ended in an outcome other than approved."""

    def __init__(self, request: ApprovalRequest) -> None:
        decision = request.decision
        reason = f": {decision.reason}" if decision and decision.reason else ""
        super().__init__(f"{request.action} {request.id} was {request.status}{reason}")
        self.request = request
        self.reason = decision.reason if decision else ""


class ApprovalDenied(ApprovalError):
    """A reviewer (or the policy, on timeout) said no; ``reason`` says why."""


class ApprovalExpired(ApprovalError):
    """Nobody decided before the last deadline; ``ticket`` is the follow-up ticket, if any."""

    @property
    def ticket(self) -> Ticket | None:
        return self.request.ticket


class ApprovalCancelled(ApprovalError):
    """The agent withdrew the request."""


class WaitTimeout(CountersignError):
    """The wait ran out; the request is still pending: wait on it again later."""

    def __init__(self, request: ApprovalRequest) -> None:
        super().__init__(f"{request.id} is still pending (owner: {request.owner_role})")
        self.request = request
        self.request_id = request.id


STATUS_ERRORS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: ThrottledError,
}
CODE_ERRORS: dict[str, type[APIError]] = {
    "no_policy": NoPolicyError,
    "condition_error": ConditionError,
    "policy_error": ConditionError,
}
