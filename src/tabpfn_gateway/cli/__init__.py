"""The ``tabpfn-gateway`` command: argparse with one module a command group."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tabpfn_gateway.errors import GatewayError

if TYPE_CHECKING:
    import httpx

__all__ = ["build_parser", "main"]

_DEBUG_ENV = "TABPFN_GATEWAY_LOG_LEVEL"

# Each module exposes register(subparsers); handlers import heavy things lazily so that
# `tabpfn-gateway --help` stays fast.
_COMMAND_MODULES = [
    "tabpfn_gateway.cli.info",
    "tabpfn_gateway.cli.db",
    "tabpfn_gateway.cli.admin",
    "tabpfn_gateway.cli.governance",
    "tabpfn_gateway.cli.fake",
    "tabpfn_gateway.cli.serve",
    "tabpfn_gateway.cli.demo",
    "tabpfn_gateway.cli.doctor",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="tabpfn-gateway",
        description="Use TabPFN safely as a team: gateway keys, encrypted tokens, metering.",
    )
    from tabpfn_gateway import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(
    argv: Sequence[str] | None = None, *, upstream_transport: httpx.BaseTransport | None = None
) -> int:
    """Entry point of the console script; returns the process exit code.

    ``upstream_transport``: the httpx transport commands reach the upstream through (token
    verification); default the network. Tests pass an in-process FakeTabPFN.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.upstream_transport = upstream_transport
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        code = handler(args)
        # Flushed here, so a reader that went away (`| head`) is seen inside the try.
        sys.stdout.flush()
    except GatewayError as exc:
        # Domain errors are for humans here: code and message, no traceback.
        print(f"error: [{exc.error_code}] {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader closed the pipe (`tabpfn-gateway info | head -2`): stop quietly. Python
        # would flush stdout again at exit and fail once more, so point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:
        # A bug, not bad input: still one line, and the traceback only when asked for.
        if os.environ.get(_DEBUG_ENV, "").upper() == "DEBUG":
            traceback.print_exc()
        print(
            f"error: [INTERNAL_ERROR] unexpected {type(exc).__name__} (a bug: please report it; "
            f"{_DEBUG_ENV}=DEBUG prints the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(code or 0)
