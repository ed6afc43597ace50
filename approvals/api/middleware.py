from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware

if TYPE_CHECKING:
    from approvals.api.longpoll import ASGIApp, Receive, Scope, Send

GetResponse = Callable[[HttpRequest], Any]


class ApiBodyLimitMiddleware:
    """Refuse oversized API bodies from their declared length, before reading them.

    The parser enforces the same limit while reading, for bodies that arrive
    without a Content-Length. (Under ASGI, ``BodyLimit`` below answers first.)
    """

    sync_capable = async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self._refusal(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        return self._refusal(request) or await self.get_response(request)

    def _refusal(self, request: HttpRequest) -> JsonResponse | None:
        if not request.path.startswith("/api/"):
            return None
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            size = int(length)
        except ValueError:
            return JsonResponse(
                {"code": "parse_error", "detail": "Content-Length is not a number."}, status=400
            )
        if size > settings.APPROVALS_MAX_BODY_BYTES:
            return JsonResponse(too_large(), status=413)
        return None


def too_large() -> dict:
    limit = settings.APPROVALS_MAX_BODY_BYTES // 1024
    return {"code": "too_large", "detail": f"The body is larger than {limit} KiB."}


class StaticFilesMiddleware:
    """WhiteNoise, without making every request sync under ASGI.

    WhiteNoise's middleware is sync only; in an async stack Django would then
    run everything below it (views included) in a thread per request. Here
    only requests for static files go through WhiteNoise in a thread.
    """

    sync_capable = async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        sync_next = async_to_sync(get_response) if self.is_async else get_response
        self.whitenoise = WhiteNoiseMiddleware(sync_next)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self.whitenoise(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        if not request.path_info.startswith(f"/{settings.STATIC_URL.lstrip('/')}"):
            return await self.get_response(request)
        return await sync_to_async(self._serve)(request)

    def _serve(self, request: HttpRequest) -> HttpResponseBase:
        response = self.whitenoise(request)
        if response.streaming:
            # Static files are small: read them here, on this thread, rather
            # than have Django iterate a sync file from the event loop.
            content = b"".join(response.streaming_content)
            if hasattr(response, "file_to_stream") and response.file_to_stream:
                response.file_to_stream.close()
            plain = HttpResponse(content, status=response.status_code)
            for name, value in response.items():
                plain[name] = value
            return plain
        return response


class BodyLimit:
    """ASGI: read each request's body (at most the API's limit) before Django sees it.

    Django's ASGI handler would read any body, however large, into a temporary
    file before a middleware can refuse it. Reading it here bounds that, and
    leaves the connection clean: every answer, whether the view read the body
    or not (401, 400...), comes after the whole body was read, so the next
    request on a keep-alive connection is parsed from its first byte.

    A body over the limit gets ``413``. Up to ``DRAIN_FACTOR`` times the limit
    it is read and dropped first, so that the client, still sending, reads
    the 413 instead of a reset, and may go on with the connection; a larger
    one is not read at all, and the 413 says ``Connection: close``.
    """

    DRAIN_FACTOR = 4

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.APPROVALS_MAX_BODY_BYTES
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and not declared.isdigit():
            return await _refuse(send, 400, close=True)
        if declared is not None and int(declared) > limit * self.DRAIN_FACTOR:
            return await _refuse(send, 413, close=True)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > limit * self.DRAIN_FACTOR:
                return await _refuse(send, 413, close=True)
            if not message.get("more_body", False):
                break
        if size > limit:
            return await _refuse(send, 413, close=False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, *, close: bool) -> None:
    if status == 413:
        body = too_large()
    else:
        body = {"code": "parse_error", "detail": "Content-Length is not a number."}
    content = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *([(b"connection", b"close")] if close else []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
