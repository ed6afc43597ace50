"""Domain errors: what went wrong in business terms. The API maps each to an
HTTP status; the inbox shows the same messages."""

from __future__ import annotations

from approvals.models import ApprovalRequest


class ApprovalError(Exception):
    code = "error"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class NoPolicy(ApprovalError):
    code = "no_policy"


class ConditionError(ApprovalError):
    """Fail closed: a matching rule's condition could not be evaluated."""

    code = "condition_error"

    def __init__(self, detail: str, *, policy: str, version: int, rule: str, error: str):
        super().__init__(detail)
        self.condition = {"policy": policy, "version": version, "rule": rule, "error": error}


class PolicyBroken(ApprovalError):
    code = "policy_error"


class ActionNotAllowed(ApprovalError):
    code = "action_not_allowed"


class IdempotencyConflict(ApprovalError):
    code = "idempotency_conflict"


class NotVisible(ApprovalError):
    code = "not_found"


class Forbidden(ApprovalError):
    code = "permission_denied"


class Invalid(ApprovalError):
    code = "invalid"

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.errors = {field: [message]}


class Conflict(ApprovalError):
    """The request is already terminal in a way that contradicts the call."""

    code = "conflict"

    def __init__(self, detail: str, request: ApprovalRequest):
        super().__init__(detail)
        self.request = request
