"""`tabpfn-gateway doctor`: check a deployment (settings, database, schema, secret, clock, files,
Redis, upstream, a token), one line a check with a fix; non-zero exit when any check fails."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

__all__ = ["register"]

_MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check settings, database, schema, secret, clock, files, Redis and the upstream",
        description="Check this deployment the way the server will use it: settings, "
        "database reachability and migration state, the secret against the stored tokens, "
        "clock skew against the database, file permissions of generated secrets, Redis when "
        "configured, the upstream's reachability and (with --check-token) a TabPFN token. "
        "Exit code 1 when any check fails, 0 otherwise (warnings included).",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--check-token",
        action="store_true",
        help="also verify a TabPFN token against the upstream: read from TABPFN_TOKEN, else "
        "prompted for (or one line on stdin); never from the command line",
    )
    parser.set_defaults(handler=_doctor)


def _read_token() -> str:
    from_env = os.environ.get("TABPFN_TOKEN", "").strip()
    if from_env:
        return from_env
    if sys.stdin.isatty():
        return getpass.getpass("TabPFN token: ").strip()
    return sys.stdin.readline().strip()


def _doctor(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from tabpfn_gateway.diagnostics import Doctor, worst

    token = SecretStr(_read_token()) if args.check_token else None
    checks = Doctor(token=token if token and token.get_secret_value() else None).run()
    verdict = worst(checks)
    if args.json:
        json.dump(
            {"ok": verdict != "fail", "status": verdict, "checks": [c.as_dict() for c in checks]},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            print(f"[{_MARKS[check.status]:>4}] {check.name.ljust(width)}  {check.detail}")
            if check.fix and check.status in ("warn", "fail"):
                print(f"       {' ' * width}  fix: {check.fix}")
        failed = sum(c.status == "fail" for c in checks)
        print(f"{failed} check(s) failed." if failed else "No check failed.")
    return 1 if verdict == "fail" else 0
