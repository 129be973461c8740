"""FakeTabPFN's account ledger: which tokens are valid, verified, and how many credits each used."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tabpfn_gateway.testing._fake.common import Refusal, bearer

__all__ = ["Ledger"]


@dataclass
class _Account:
    limit: int | None
    verified: bool = True
    used: int = 0


class Ledger:
    """Accounts by token: a credit limit (None: unlimited), verified or not, credits used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    def add_token(self, token: str, *, limit: int | None = None, verified: bool = True) -> None:
        with self._lock:
            self._accounts[token] = _Account(limit=limit, verified=verified)

    def usage(self, token: str) -> int:
        with self._lock:
            return self._accounts[token].used

    def set_usage(self, token: str, used: int) -> None:
        with self._lock:
            self._accounts[token].used = used

    def check(self, authorization: str | None, *, allow_over_limit: bool = True) -> str:
        """The token of an ``Authorization`` header if its account may call now; else the
        refusal the cloud answers (401 unknown, 403 unverified, 429 spent)."""
        token = bearer(authorization)
        with self._lock:
            account = self._accounts.get(token) if token is not None else None
            if token is None or account is None:
                raise Refusal(401, "Invalid or missing access token.")
            if not account.verified:
                raise Refusal(403, "Please verify your e-mail address before using the API.")
            if not allow_over_limit and account.limit is not None and account.used >= account.limit:
                raise Refusal(429, "Usage limit reached.", **self._usage_body(account))
        return token

    def charge(self, token: str, credits: int) -> None:
        """Spend ``credits``, or refuse (429) without spending if they pass the limit."""
        with self._lock:
            account = self._accounts[token]
            if account.limit is not None and account.used + credits > account.limit:
                raise Refusal(
                    429,
                    f"Usage limit reached: this call needs {credits} credits.",
                    **self._usage_body(account),
                )
            account.used += credits

    def usage_report(self, token: str) -> dict[str, Any]:
        """What ``/get_api_usage/`` answers for ``token``."""
        with self._lock:
            body = self._usage_body(self._accounts[token])
        body.pop("error_code")
        return body

    @staticmethod
    def _usage_body(account: _Account) -> dict[str, Any]:
        reset = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
        return {
            "error_code": "USAGE_LIMIT_REACHED",
            "current_usage": account.used,
            "usage_limit": -1 if account.limit is None else account.limit,
            "reset_time": reset.isoformat(),
        }
