"""The HTTP server of `finishline api` and `finishline run`: uvicorn, with limits on request heads.

uvicorn's own protocols bound neither how long a client may take to send its request line and
headers (a client sending one byte every few seconds holds a connection, and its buffer, forever:
slowloris) nor, with httptools, how large the headers may be. `GuardedH11Protocol` is uvicorn's
h11 protocol plus two checks while a request head is incomplete:
- more than `max_header_bytes` buffered: 431 Request Header Fields Too Large, connection closed;
- not complete `header_timeout_s` after the connection opened or the head's first byte: 408,
  connection closed.
Bodies are not timed here: the upload routes read them as they come, and BodySizeLimit caps them.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import Settings


def _plain_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing() or not self._waiting_for_head():
            return
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large",
                         f"Request headers are limited to {self.max_header_bytes} bytes.")
        elif self._head_timer is None:
            self._start_head_timer()  # the next request on a kept-alive connection

    def handle_events(self) -> None:
        super().handle_events()
        if not self._waiting_for_head():
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            if self.conn.trailing_data[0]:
                self._refuse(408, "Request Timeout", "The request headers took too long to arrive.")
            else:
                self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, reason: str, text: str) -> None:
        self._cancel_head_timer()
        self.logger.warning("%s from %s: %s", status, self.client and self.client[0], text)
        self.transport.write(_plain_response(status, reason, text))
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    return type("FinishlineH11Protocol", (GuardedH11Protocol,), {
        "max_header_bytes": settings.max_header_bytes, "header_timeout_s": settings.header_timeout_s})


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API until stopped (Ctrl-C / SIGTERM)."""
    import uvicorn

    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, log_level="info",
        http=guarded_protocol(settings),
        # h11 itself gives up at this size with a 400; ours answers 431 well before it
        h11_max_incomplete_event_size=settings.max_header_bytes + 1024 * 1024,
        proxy_headers=False,  # app/main.py applies X-Forwarded-For from FINISHLINE_TRUSTED_PROXIES only
    )
