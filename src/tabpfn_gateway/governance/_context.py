"""Per-request context the server fills and the core reads, without the core knowing HTTP:
the client's address (for allowlists) and a holder for RateLimit answer headers."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["client_address", "publish_headers", "response_headers"]

#: The client's network address for this request (set by the server; None in-process).
client_address: ContextVar[str | None] = ContextVar("tabpfn_gateway_client_address", default=None)

#: A dict the server sets per request; the core adds answer headers to it.
response_headers: ContextVar[dict[str, str] | None] = ContextVar(
    "tabpfn_gateway_response_headers", default=None
)


def publish_headers(headers: dict[str, str]) -> None:
    """Add ``headers`` to this request's answer, if a server is listening for them."""
    if not headers:
        return
    holder = response_headers.get()
    if holder is not None:
        holder.update(headers)
