"""`tabpfn-gateway fake-upstream`: serve FakeTabPFN on a local port (tests, CI, offline demo)."""

from __future__ import annotations

import argparse
import errno
import socket
from typing import Any

from tabpfn_gateway.errors import ConfigurationError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``fake-upstream`` to the top-level parser."""
    parser = subparsers.add_parser(
        "fake-upstream",
        help="serve FakeTabPFN, an offline TabPFN API backed by scikit-learn models",
        description="Serve FakeTabPFN: the TabPFN API's endpoints and bodies, offline, with "
        "scikit-learn models behind. Point tabpfn-client at it with TABPFN_CLIENT_API_URL. "
        "With --hosted, serve a self-hosted inference container instead (POST /predict, as "
        "tabpfn_client.hosted speaks it). Needs uvicorn (pip install tabpfn-gateway[server]).",
    )
    parser.add_argument(
        "--hosted",
        action="store_true",
        help="serve the inference-container protocol (POST /predict); --token is optional "
        "there (none: no authentication)",
    )
    parser.add_argument(
        "--max-cached-models",
        type=int,
        default=16,
        help="--hosted: models kept for model_id reuse (least recently used evicted)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default 8765)")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a valid token (repeatable); TOKEN:LIMIT gives it a credit limit",
    )
    parser.add_argument(
        "--unverified-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a token answered with 403 (unverified e-mail; repeatable)",
    )
    parser.add_argument(
        "--pending-polls", type=int, default=0, help="polls an async fit stays pending"
    )
    parser.add_argument(
        "--retry-in-secs", type=float, default=0.0, help="polling hint while a fit is pending"
    )
    parser.add_argument(
        "--upload-chunks", type=int, default=1, help="signed URLs per uploaded file"
    )
    parser.add_argument(
        "--prediction-uri", action="store_true", help="answer predict with a download URI"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered 503"
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    parser.set_defaults(handler=_serve)


def _parse_tokens(values: list[str]) -> dict[str, int | None]:
    tokens: dict[str, int | None] = {}
    for value in values:
        token, sep, limit = value.rpartition(":")
        if sep and limit.isdigit() and token:
            tokens[token] = int(limit)
        else:
            tokens[value] = None
    return tokens


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "fake-upstream needs uvicorn: pip install 'tabpfn-gateway[server]'"
        ) from None
    if args.hosted:
        return _serve_hosted(args, uvicorn)
    from tabpfn_gateway.testing.fake import FakeTabPFN

    tokens = _parse_tokens(args.token)
    if not tokens and not args.unverified_token:
        raise ConfigurationError("Give at least one --token (or --unverified-token).")
    fake = FakeTabPFN(
        tokens,
        unverified_tokens=args.unverified_token,
        pending_polls=args.pending_polls,
        retry_in_secs=args.retry_in_secs,
        upload_chunks=args.upload_chunks,
        prediction_uri_mode=args.prediction_uri,
        latency=args.latency,
        error_rate=args.error_rate,
        # Nobody reads a served fake's request log: keeping it grew without end, and the
        # garbage collector's pauses with it (tens of ms after a benchmark's first minutes).
        keep_requests=0,
    )
    sock = _bind(args.host, args.port)
    # Tokens are not printed: they may be real-looking strings someone pasted.
    print(
        f"FakeTabPFN serving on http://{args.host}:{args.port} ({len(tokens)} token(s)); "
        "Ctrl-C stops it.",
        flush=True,
    )
    _run(uvicorn, fake.app, sock, args)
    return 0


def _serve_hosted(args: argparse.Namespace, uvicorn: Any) -> int:
    from tabpfn_gateway.testing.fake_hosted import FakeHostedTabPFN

    tokens = list(_parse_tokens(args.token)) or None
    fake = FakeHostedTabPFN(
        tokens=tokens,
        max_cached_models=args.max_cached_models,
        latency=args.latency,
        error_rate=args.error_rate,
        keep_requests=0,  # as for the cloud fake: nobody reads a served fake's log
    )
    auth = "no authentication" if tokens is None else f"{len(tokens)} token(s)"
    sock = _bind(args.host, args.port)
    print(
        f"FakeHostedTabPFN serving on http://{args.host}:{args.port}/predict ({auth}); "
        "Ctrl-C stops it.",
        flush=True,
    )
    _run(uvicorn, fake.app, sock, args)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says "serving": a busy port is one clear
    error instead of a claim followed by uvicorn's traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"Port {port} on {host} is in use: stop what runs there, or pick another "
                "with --port."
            ) from None
        raise ConfigurationError(
            f"Cannot listen on {host}:{port}: {exc.strerror or type(exc).__name__}."
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run(uvicorn: Any, app: Any, sock: socket.socket, args: argparse.Namespace) -> None:
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
