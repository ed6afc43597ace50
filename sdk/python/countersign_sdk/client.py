"""``Countersign`` and ``AsyncCountersign``: the agent API over httpx.

Every call is bounded in time. Connection errors, 5xx and 429 are retried with
jittered exponential backoff (429 and 503 honour ``Retry-After``). Creating is
safe to retry because every create carries an ``Idempotency-Key`` (one is made
when the caller gives none), so a POST whose answer was lost never makes a
second request. ``wait`` long-polls in calls of at most 60 s and re-attaches
after a dropped connection or a restarted server until its own deadline.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from countersign_sdk import __version__
from countersign_sdk.errors import (
    CODE_ERRORS,
    STATUS_ERRORS,
    APIConnectionError,
    APIError,
    ConflictError,
    CountersignError,
    ServerError,
    ThrottledError,
    WaitTimeout,
)
from countersign_sdk.models import ApprovalRequest, Page

DEFAULT_TIMEOUT = 30.0  # seconds for one HTTP exchange (a long-poll adds its wait)
DEFAULT_WAIT = 3600.0  # seconds ``wait`` waits for a decision unless told otherwise
MAX_POLL = 60  # the server holds a long-poll at most this long
POLL_MARGIN = 15.0  # on top of a long-poll's hold, for the network and a busy server
MAX_RETRY_AFTER = 120.0  # never sleep longer than this on a server's say-so


def _error_from(response: httpx.Response) -> APIError:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    data = body if isinstance(body, dict) else {}
    code = str(data.get("code") or f"http_{response.status_code}")
    detail = str(data.get("detail") or response.reason_phrase or "")
    errors = data.get("errors") if isinstance(data.get("errors"), dict) else None
    if code in CODE_ERRORS:
        cls = CODE_ERRORS[code]
    elif response.status_code >= 500:
        cls = ServerError
    else:
        cls = STATUS_ERRORS.get(response.status_code, APIError)
    error = cls(response.status_code, code, detail, errors, body)
    if isinstance(error, ConflictError) and "id" in data and "status" in data:
        error.request = ApprovalRequest.from_json(data)
    if isinstance(error, ThrottledError):
        error.retry_after = _retry_after(response)
    return error


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        # A proxy's HTML page, say: never hand the caller a half-understood answer.
        raise APIError(response.status_code, "invalid_response", "the answer is not JSON") from None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


class _Base:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
    ) -> None:
        api_key = api_key or os.environ.get("COUNTERSIGN_API_KEY")
        base_url = base_url or os.environ.get("COUNTERSIGN_URL")
        if not api_key:
            raise CountersignError("no API key: pass api_key= or set COUNTERSIGN_API_KEY")
        if not base_url:
            raise CountersignError("no server: pass base_url= or set COUNTERSIGN_URL")
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"countersign-sdk-python/{__version__}",
        }

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Full jitter on an exponential backoff; a server's Retry-After wins."""
        if response is not None:
            after = _retry_after(response)
            if after is not None:
                return min(after, MAX_RETRY_AFTER) + random.uniform(0, self.backoff)
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    @staticmethod
    def _create_body(
        action: str,
        summary: str,
        context: Mapping[str, Any] | None,
        payload: Mapping[str, Any] | None,
        callback_url: str | None,
        requester: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "action": action,
            "summary": summary,
            "context": dict(context or {}),
            "payload": dict(payload or {}),
        }
        if callback_url is not None:
            body["callback_url"] = callback_url
        if requester is not None:
            body["requester"] = dict(requester)
        return body

    @staticmethod
    def _list_params(**params: Any) -> dict[str, Any]:
        return {key: value for key, value in params.items() if value is not None}


def _hold(deadline: float | None) -> int:
    """Seconds to ask the server to hold the next long-poll (0: just look)."""
    if deadline is None:
        return MAX_POLL
    return max(0, min(MAX_POLL, math.floor(deadline - time.monotonic())))


def _request_id(request: str | ApprovalRequest) -> str:
    return request.id if isinstance(request, ApprovalRequest) else str(request)


# --- synchronous ------------------------------------------------------------------------


class Countersign(_Base):
    """The agent API. ``Countersign()`` reads COUNTERSIGN_URL and COUNTERSIGN_API_KEY."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key, base_url, **options)
        self._http = http_client or httpx.Client()
        self.requests = Requests(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Countersign:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        hold: float = 0.0,
        retries: int | None = None,
    ) -> Any:
        retries = self.max_retries if retries is None else retries
        timeout = httpx.Timeout(self.timeout + hold, connect=min(self.timeout, 10.0))
        for attempt in range(retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json,
                    headers={**self._headers, **(headers or {})},
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                if attempt >= retries:
                    raise APIConnectionError(f"{method} {path}: {exc!r}") from exc
            else:
                if response.is_success:
                    return _json(response)
                if not _retryable(response) or attempt >= retries:
                    raise _error_from(response)
            time.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")


class Requests:
    def __init__(self, client: Countersign) -> None:
        self._client = client

    def create(
        self,
        *,
        action: str,
        summary: str,
        context: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        requester: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ApprovalRequest:
        """Ask for an approval. The same key with the same body answers the same request."""
        body = self._client._create_body(action, summary, context, payload, callback_url, requester)
        key = idempotency_key or uuid.uuid4().hex
        data = self._client._call(
            "POST", "/api/v1/requests", json=body, headers={"Idempotency-Key": key}
        )
        return ApprovalRequest.from_json(data)

    def get(self, request_id: str | ApprovalRequest) -> ApprovalRequest:
        return ApprovalRequest.from_json(
            self._client._call("GET", f"/api/v1/requests/{_request_id(request_id)}")
        )

    def list(
        self,
        *,
        status: str | None = None,
        action: str | None = None,
        idempotency_key: str | None = None,
        page: int | None = None,
    ) -> Page:
        params = self._client._list_params(
            status=status, action=action, idempotency_key=idempotency_key, page=page
        )
        return Page.from_json(self._client._call("GET", "/api/v1/requests", params=params))

    def find(self, idempotency_key: str) -> ApprovalRequest | None:
        """The request created with this key, if any: how a restarted agent re-attaches."""
        results = self.list(idempotency_key=idempotency_key).results
        return results[0] if results else None

    def cancel(self, request_id: str | ApprovalRequest, *, reason: str = "") -> ApprovalRequest:
        """Withdraw a pending request. Already cancelled (a retried cancel): returns it;
        terminal otherwise: ConflictError, with ``request`` as it stands."""
        try:
            data = self._client._call(
                "POST",
                f"/api/v1/requests/{_request_id(request_id)}/cancel",
                json={"reason": reason},
            )
        except ConflictError as exc:
            if exc.request is not None and exc.request.status == "cancelled":
                return exc.request
            raise
        return ApprovalRequest.from_json(data)

    def wait(
        self,
        request_id: str | ApprovalRequest,
        timeout: float | None = DEFAULT_WAIT,
        *,
        raise_for_outcome: bool = False,
    ) -> ApprovalRequest:
        """Until the request is terminal, or WaitTimeout after ``timeout`` seconds.

        Long-polls (at most 60 s a call); a dropped connection, a 5xx or a 429 only
        means asking again after a backoff, until the deadline. With
        ``raise_for_outcome``, an outcome other than approved raises its error.
        """
        rid = _request_id(request_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: ApprovalRequest | None = None
        failures = 0
        while True:
            hold = _hold(deadline)
            try:
                data = self._client._call(
                    "GET",
                    f"/api/v1/requests/{rid}",
                    params={"wait": hold} if hold else None,
                    hold=hold,
                    retries=0,
                )
            except (APIConnectionError, ServerError, ThrottledError) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    if last is not None:
                        raise WaitTimeout(last) from exc
                    raise
                after = getattr(exc, "retry_after", None)
                pause = (
                    self._client._delay(failures, None)
                    if after is None
                    else min(after, MAX_RETRY_AFTER)
                )
                failures += 1
                if deadline is not None:
                    pause = min(pause, max(deadline - time.monotonic(), 0))
                time.sleep(pause)
                continue
            failures = 0
            last = ApprovalRequest.from_json(data)
            if last.is_terminal:
                return last.raise_for_outcome() if raise_for_outcome else last
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(last)


# --- asynchronous -----------------------------------------------------------------------


class AsyncCountersign(_Base):
    """The same API for asyncio: ``await cs.requests.create(...)``."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> None:
        super().__init__(api_key, base_url, **options)
        self._http = http_client or httpx.AsyncClient()
        self.requests = AsyncRequests(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCountersign:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        hold: float = 0.0,
        retries: int | None = None,
    ) -> Any:
        retries = self.max_retries if retries is None else retries
        timeout = httpx.Timeout(self.timeout + hold, connect=min(self.timeout, 10.0))
        for attempt in range(retries + 1):
            response: httpx.Response | None = None
            try:
                response = await self._http.request(
                    method,
                    self.base_url + path,
                    params=params,
                    json=json,
                    headers={**self._headers, **(headers or {})},
                    timeout=timeout,
                )
            except httpx.TransportError as exc:
                if attempt >= retries:
                    raise APIConnectionError(f"{method} {path}: {exc!r}") from exc
            else:
                if response.is_success:
                    return _json(response)
                if not _retryable(response) or attempt >= retries:
                    raise _error_from(response)
            await asyncio.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")


class AsyncRequests:
    def __init__(self, client: AsyncCountersign) -> None:
        self._client = client

    async def create(
        self,
        *,
        action: str,
        summary: str,
        context: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        callback_url: str | None = None,
        requester: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ApprovalRequest:
        body = self._client._create_body(action, summary, context, payload, callback_url, requester)
        key = idempotency_key or uuid.uuid4().hex
        data = await self._client._call(
            "POST", "/api/v1/requests", json=body, headers={"Idempotency-Key": key}
        )
        return ApprovalRequest.from_json(data)

    async def get(self, request_id: str | ApprovalRequest) -> ApprovalRequest:
        return ApprovalRequest.from_json(
            await self._client._call("GET", f"/api/v1/requests/{_request_id(request_id)}")
        )

    async def list(
        self,
        *,
        status: str | None = None,
        action: str | None = None,
        idempotency_key: str | None = None,
        page: int | None = None,
    ) -> Page:
        params = self._client._list_params(
            status=status, action=action, idempotency_key=idempotency_key, page=page
        )
        return Page.from_json(await self._client._call("GET", "/api/v1/requests", params=params))

    async def find(self, idempotency_key: str) -> ApprovalRequest | None:
        results = (await self.list(idempotency_key=idempotency_key)).results
        return results[0] if results else None

    async def cancel(
        self, request_id: str | ApprovalRequest, *, reason: str = ""
    ) -> ApprovalRequest:
        try:
            data = await self._client._call(
                "POST",
                f"/api/v1/requests/{_request_id(request_id)}/cancel",
                json={"reason": reason},
            )
        except ConflictError as exc:
            if exc.request is not None and exc.request.status == "cancelled":
                return exc.request
            raise
        return ApprovalRequest.from_json(data)

    async def wait(
        self,
        request_id: str | ApprovalRequest,
        timeout: float | None = DEFAULT_WAIT,
        *,
        raise_for_outcome: bool = False,
    ) -> ApprovalRequest:
        rid = _request_id(request_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: ApprovalRequest | None = None
        failures = 0
        while True:
            hold = _hold(deadline)
            try:
                data = await self._client._call(
                    "GET",
                    f"/api/v1/requests/{rid}",
                    params={"wait": hold} if hold else None,
                    hold=hold,
                    retries=0,
                )
            except (APIConnectionError, ServerError, ThrottledError) as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    if last is not None:
                        raise WaitTimeout(last) from exc
                    raise
                after = getattr(exc, "retry_after", None)
                pause = (
                    self._client._delay(failures, None)
                    if after is None
                    else min(after, MAX_RETRY_AFTER)
                )
                failures += 1
                if deadline is not None:
                    pause = min(pause, max(deadline - time.monotonic(), 0))
                await asyncio.sleep(pause)
                continue
            failures = 0
            last = ApprovalRequest.from_json(data)
            if last.is_terminal:
                return last.raise_for_outcome() if raise_for_outcome else last
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(last)
