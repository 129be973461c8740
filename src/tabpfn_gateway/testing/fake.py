"""FakeTabPFN: an offline TabPFN upstream (Starlette app) backed by real scikit-learn models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FakeTabPFN", "LoggedRequest"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request FakeTabPFN answered: what tests assert on.

    ``token`` is the bearer credential the request carried (``None`` if none): the fake's own
    test tokens, recorded so isolation tests can prove whose request was whose.
    """

    method: str
    path: str
    token: str | None
    status: int


class FakeTabPFN:
    """The TabPFN cloud API, offline: same endpoints and bodies, scikit-learn models behind.

    ``FakeTabPFN(tokens={"tok-a", "tok-b"}).app`` is an ASGI app; reach it in-process with
    ``httpx.ASGITransport`` or ``tabpfn_gateway.testing.transport.ASGIBridgeTransport``, or on
    loopback with ``tabpfn-gateway fake-upstream --port N --token T``.

    Parameters
    ----------
    tokens:
        Valid tokens: an iterable of tokens, or a mapping token -> credit limit (``None`` for
        unlimited).
    unverified_tokens:
        Tokens answered with 403 (an account whose e-mail is not verified).
    credit_limit:
        Default credit limit of each token given as an iterable (``None``: unlimited). A
        prediction costs ``test rows x columns`` credits; past the limit calls answer 429 with
        a usage body.
    pending_polls:
        How many ``get_fit_status`` polls an async fit stays ``pending`` before ``completed``.
    retry_in_secs:
        The polling hint ``get_fit_status`` sends while pending.
    """

    def __init__(
        self,
        tokens: Iterable[str] | Mapping[str, int | None] = (),
        *,
        unverified_tokens: Iterable[str] = (),
        credit_limit: int | None = None,
        pending_polls: int = 0,
        retry_in_secs: float = 0.0,
        upload_chunks: int = 1,
        upload_url_ttl: float = 3600.0,
        prediction_uri_mode: bool = False,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        raise NotImplementedError

    @property
    def app(self) -> Any:
        """The Starlette ASGI application."""
        raise NotImplementedError
