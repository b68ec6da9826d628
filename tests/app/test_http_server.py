"""Issues 12.10 and 12.11 against a real `finishline api` over raw sockets: oversized and slow
request heads are cut off, and a rate-limited post is refused before its body is sent."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import (free_port, migrated_settings, new_api_key, service_env, start_process, stop_process,
                            wait_for_http)

HEADER_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    settings = migrated_settings(tmp / "data")
    port = free_port()
    env = {**service_env(settings), "FINISHLINE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "FINISHLINE_PUBLIC_RATE_LIMIT": "1", "FINISHLINE_PUBLIC_RATE_WINDOW_S": "600"}
    log = tmp / "api.log"
    process = start_process(["api", "--port", str(port)], env, log)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process, log)
        key = new_api_key(settings)
        event = httpx.post(f"http://127.0.0.1:{port}/api/v1/events", json={"name": "Socket run"},
                           headers={"Authorization": f"Bearer {key}"}).json()
        yield port, event["slug"]
    finally:
        stop_process(process)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_all(sock: socket.socket, deadline_s: float = 10) -> bytes:
    """Everything the server sends until it closes (or the deadline passes)."""
    data, end = b"", time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, socket.timeout):
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_a_huge_header_gets_431_and_its_connection_closed(server):
    port, _ = server
    sock = _connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    try:
        for _ in range(160):  # up to 10 MB, in 64 KB pieces; the server stops reading long before
            sock.sendall(b"a" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_normal_headers_still_work(server):
    port, _ = server
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Fine": "a" * 8000})
    assert response.status_code == 200


def test_a_head_sent_a_byte_at_a_time_is_cut_off(server):
    port, _ = server
    sock = _connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started, closed = time.monotonic(), False
    while time.monotonic() - started < HEADER_TIMEOUT_S + 8:  # bounded: the test ends either way
        try:
            sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        sock.settimeout(0.5)
        try:
            sock.recv(4096)  # any answer (408) or EOF means cut off
            closed = True
            break
        except (TimeoutError, socket.timeout):
            pass
        except ConnectionResetError:
            closed = True
            break
    sock.close()
    assert closed, "the server kept a connection whose headers never finished"


def test_an_idle_connection_is_closed(server):
    port, _ = server
    sock = _connect(port)
    assert _read_all(sock, HEADER_TIMEOUT_S + 8) == b""  # closed, not held open
    sock.close()


def test_a_rate_limited_post_is_refused_before_its_body_is_sent(server):
    port, slug = server
    first = httpx.post(f"http://127.0.0.1:{port}/e/{slug}", data={"name": "A", "email": "a@example.org"},
                       files={"selfie": ("s.jpg", b"x", "image/jpeg")}, timeout=120)  # loads the CNN
    assert first.status_code == 422  # the allowance of one, used
    sock = _connect(port)
    sock.sendall(f"POST /e/{slug} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n"
                 "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode())
    sock.settimeout(8)
    try:
        answer = sock.recv(65536)  # without sending a byte of the 50 MB body
    except (TimeoutError, socket.timeout):
        answer = b""
    sock.close()
    assert answer.startswith(b"HTTP/1.1 429"), answer[:300]
    assert b"retry-after:" in answer.lower()
