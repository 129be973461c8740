"""Item 10: request heads past 64 KB get 431 HEADERS_TOO_LARGE, from `serve` as operators run it
(uvicorn, real sockets) and from the app under any server."""

from __future__ import annotations

import json
import select
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from security_support import Stack, cli_env, serve_cli
from tabpfn_gateway_server.httpserver import MAX_HEADER_BYTES

pytestmark = pytest.mark.slow


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the one answer on ``sock`` (the server closes after it)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "no answer"
    return int(head.split(b" ", 2)[1]), body


def _request(url: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    lines = ["GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    with _connect(url) as sock:
        sock.sendall(("".join(lines) + "\r\n").encode())
        return _read_answer(sock)


def test_serve_refuses_heads_past_64_kb_with_431(tmp_path: Path) -> None:
    with serve_cli(cli_env(tmp_path)) as url:
        # Just under the limit: answered.
        small = [(f"X-Pad-{i}", "a" * 6000) for i in range(9)]
        status, _ = _request(url, small)
        assert status == 200
        # Many headers, together past it: whole heads, refused with the documented body.
        status, body = _request(url, [(f"X-Pad-{i}", "a" * 6000) for i in range(12)])
        assert status == 431
        assert json.loads(body)["error_code"] == "HEADERS_TOO_LARGE"
        # One endless header: refused while it arrives, long before 32 MB are sent.
        sent = 0
        with _connect(url) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            piece = b"b" * 16384
            while sent < 32 * 1024 * 1024:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(piece)
            status, body = _read_answer(sock)
        assert status == 431
        assert json.loads(body)["error_code"] == "HEADERS_TOO_LARGE"
        # Answered while the header was still unfinished (what is in flight sits in socket
        # buffers; the worker itself stops reading at the limit).
        assert sent < 32 * 1024 * 1024
        # The server still answers others.
        assert _request(url, [])[0] == 200


def test_the_app_refuses_heads_past_the_limit_under_any_server(stack: Stack) -> None:
    under = {f"x-pad-{i}": "a" * 6000 for i in range(9)}
    assert stack.http.get("/healthz", headers=under).status_code == 200
    over = {"x-pad": "a" * (MAX_HEADER_BYTES + 1)}
    response = stack.http.get("/protected/", headers={**over, **stack.bearer(stack.alice.key)})
    assert response.status_code == 431
    assert response.json()["error_code"] == "HEADERS_TOO_LARGE"
    assert stack.fake.requests_to("/protected/") == []
