"""The console's browser security: session cookie, anti-forgery checks and response headers."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONSOLE_PREFIX",
    "PRE_SESSION_COOKIE",
    "SESSION_COOKIE",
    "ConsoleHeadersMiddleware",
    "is_secure",
    "new_pre_session_token",
    "same_origin",
    "set_cookie",
]

CONSOLE_PREFIX = "/console"
SESSION_COOKIE = "tpg_console"
# A sign-in form's anti-forgery token (double-submit): set with the form, echoed in it.
PRE_SESSION_COOKIE = "tpg_console_signin"

# No inline script or style anywhere: scripts and styles come only from /console/static.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: with it browsers send "Origin: null" on form posts, and the origin check
    # needs the real one.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), clipboard-write=(self)",
}


class ConsoleHeadersMiddleware:
    """Adds the console's security headers to every answer under ``/console`` (pages, static
    files, redirects and errors alike); pages are never cached, static files may be."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        is_static = path.startswith(CONSOLE_PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                if is_static:
                    headers["cache-control"] = "public, max-age=3600"
                else:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_secure(request: Request, public_url: str | None) -> bool:
    """Whether the browser reached us over TLS: the request's scheme (uvicorn sets it from
    trusted proxy headers) or an https public URL."""
    return request.url.scheme == "https" or bool(public_url and public_url.startswith("https:"))


def set_cookie(
    response: Response,
    name: str,
    value: str,
    *,
    secure: bool,
    max_age: int | None,
) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, scoped to /console, Secure over TLS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=CONSOLE_PREFIX,
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def new_pre_session_token() -> str:
    """A random token for the sign-in form's double-submit check."""
    return secrets.token_urlsafe(24)


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin (``Origin`` or, when
    absent, ``Referer``); requests that say nothing pass (the CSRF token still decides)."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return claimed != "null"
    parts = urlsplit(claimed)
    return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)
