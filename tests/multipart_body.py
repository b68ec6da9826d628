"""Multipart bodies written by hand, for what a client library will not send (a late field, a
cut-off body, a wrong boundary)."""

from __future__ import annotations

BOUNDARY = "finishline-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, *, field: str = "files") -> bytes:
    """A file part."""
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"


def field_part(field: str, value: str) -> bytes:
    """A plain field."""
    return f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n".encode()


def end() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()
