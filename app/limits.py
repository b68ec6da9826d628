"""A request-body size limit applied before anything parses the body."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, problem


class BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` mid-body. An AppError, so code that parses the body (multipart
    parsing wraps its errors) can let it through and it still renders as 413, not a 422 or 500."""


# The organisers' bulk upload is the one route that takes big bodies (zips of a whole race).
BULK_UPLOAD = re.compile(r"^/api/v1/events/[^/]+/photos/?$")
# Every other body (the public selfie form above all) is at most one photo plus a few fields.
FORM_OVERHEAD_BYTES = 1 << 20


class BodySizeLimit:
    """413 when Content-Length says too much, or when a chunked body grows past the limit.

    The limit is `max_bytes` (FINISHLINE_MAX_REQUEST_BYTES) for the bulk upload and
    max_file_bytes + 1 MiB for every other route, so nobody can stream gigabytes at a public form.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_form_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.max_form_bytes = min(max_bytes, max_form_bytes)

    def limit_for(self, scope: Scope) -> int:
        return self.max_bytes if BULK_UPLOAD.match(scope["path"]) else self.max_form_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, receive, send, limit)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(scope, receive, send, limit)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(413, "Payload too large",
                           f"The request body is larger than {limit} bytes.", "payload_too_large",
                           {"Connection": "close"})
        await response(scope, receive, send)
