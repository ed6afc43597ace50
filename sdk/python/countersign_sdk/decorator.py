"""``@requires_approval``: a function that runs only once a human approved it.

    @requires_approval(action="refund.issue", summary="Refund {order_id}",
                       context=lambda order_id, amount: {"amount": amount})
    def refund(order_id: str, amount: float) -> None: ...

Calling ``refund("A-1", 30.0)`` asks for an approval whose payload is the call's
arguments, waits for the decision, and then runs ``refund`` with the approved
payload (a reviewer's edits included). Denied, expired or cancelled: the function
does not run and ApprovalDenied, ApprovalExpired or ApprovalCancelled is raised.

The Idempotency-Key comes from the arguments (or ``key=``), so a process that is
restarted and calls again finds its request instead of asking a second time.
Arguments must be JSON values and the function must accept them by name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from countersign_sdk._canonical import sha256_hex
from countersign_sdk.client import DEFAULT_WAIT, AsyncCountersign, Countersign
from countersign_sdk.models import ApprovalRequest

F = TypeVar("F", bound=Callable[..., Any])

Text = str | Callable[..., str]
Data = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None


def requires_approval(
    *,
    action: str,
    summary: Text,
    context: Data = None,
    key: Text | None = None,
    client: Countersign | AsyncCountersign | None = None,
    timeout: float | None = DEFAULT_WAIT,
    callback_url: str | None = None,
    requester: Data = None,
) -> Callable[[F], F]:
    """``summary``, ``context``, ``key`` and ``requester`` are values, or callables taking the
    function's arguments; a ``summary`` or ``key`` string is formatted with the arguments."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        def prepare(args: tuple, kwargs: dict) -> tuple[dict[str, Any], dict[str, Any]]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            # A method's instance is not part of what is approved.
            bound_self = {
                name: arguments.pop(name) for name in ("self", "cls") if name in arguments
            }
            payload = arguments
            body = {
                "action": action,
                "summary": _text(summary, payload),
                "context": dict(_data(context, payload) or {}),
                "payload": payload,
                "callback_url": callback_url,
                "requester": _data(requester, payload),
            }
            if key is None:
                digest = sha256_hex({"action": action, "payload": payload})[:40]
                body["idempotency_key"] = f"{func.__module__}.{func.__qualname__}:{digest}"
            else:
                body["idempotency_key"] = _text(key, payload)
            return body, bound_self

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                body, bound_self = prepare(args, kwargs)
                if client is None:
                    # An httpx.AsyncClient belongs to one event loop: one per call.
                    async with AsyncCountersign() as own:
                        done = await _approve_async(own, body, timeout)
                elif isinstance(client, AsyncCountersign):
                    done = await _approve_async(client, body, timeout)
                else:
                    raise TypeError("an async function needs an AsyncCountersign client")
                return await func(*bound_self.values(), **_approved_payload(done))

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            body, bound_self = prepare(args, kwargs)
            cs = client if client is not None else _default_sync()
            if not isinstance(cs, Countersign):
                raise TypeError("a plain function needs a Countersign client")
            request = cs.requests.create(**body)
            done = cs.requests.wait(request.id, timeout, raise_for_outcome=True)
            return func(*bound_self.values(), **_approved_payload(done))

        return wrapper  # type: ignore[return-value]

    return decorate


async def _approve_async(
    cs: AsyncCountersign, body: dict[str, Any], timeout: float | None
) -> ApprovalRequest:
    request = await cs.requests.create(**body)
    return await cs.requests.wait(request.id, timeout, raise_for_outcome=True)


def _approved_payload(request: ApprovalRequest) -> dict[str, Any]:
    decision = request.decision
    assert decision is not None and decision.payload is not None  # approved: it has both
    decision.verify()  # run exactly what was approved, or nothing
    return dict(decision.payload)


def _text(value: Text, arguments: dict[str, Any]) -> str:
    if callable(value):
        return value(**arguments)
    return value.format_map(arguments) if "{" in value else value


def _data(value: Data, arguments: dict[str, Any]) -> Mapping[str, Any] | None:
    return value(**arguments) if callable(value) else value


_sync_client: Countersign | None = None


def _default_sync() -> Countersign:
    global _sync_client
    if _sync_client is None:
        _sync_client = Countersign()
    return _sync_client
