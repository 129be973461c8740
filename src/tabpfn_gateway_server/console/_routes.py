"""The console's pages: thin handlers that read a form, call the core, and render a template."""

from __future__ import annotations

import functools
import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import SecretStr

from tabpfn_gateway.errors import (
    AuthenticationError,
    CredentialNotFound,
    GatewayError,
    InsufficientScope,
    InvalidRequest,
)
from tabpfn_gateway.gateway import Gateway, http_status
from tabpfn_gateway.governance import REPORT_DIMENSIONS, report_csv
from tabpfn_gateway.keys import ALL_SCOPES, DEFAULT_SCOPES, SCOPE_ADMIN
from tabpfn_gateway.sessions import AdminSessions, SessionLookup
from tabpfn_gateway_server.console import _reports
from tabpfn_gateway_server.console._charts import daily_calls_svg
from tabpfn_gateway_server.console._security import (
    CONSOLE_PREFIX,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    is_secure,
    new_pre_session_token,
    same_origin,
    set_cookie,
)
from tabpfn_gateway_server.deps import client_address, public_base_url
from tabpfn_gateway_server.ratelimit import AttemptLimiter

__all__ = ["build_console_router", "install_console_handlers"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

PERIODS = (30, 90)
DEFAULT_REPORT_BY = ("principal", "operation")
AUDIT_PAGE = 50
GRACE_CHOICES = (0, 1, 24, 168)  # hours the old secret keeps working after a rotation

NOTICES = {
    "signed-out": "You are signed out.",
    "principal-added": "Added.",
    "credential-added": "The TabPFN token is stored, encrypted.",
    "hosted-credential-added": (
        "The self-hosted container is stored; its bearer token, if any, is encrypted."
    ),
    "credential-removed": "The credential is removed; keys bound to it are refused from now on.",
    "key-revoked": "The key is revoked. Every replica refuses it from its next request.",
    "key-disabled": "The key is disabled until you enable it again.",
    "key-enabled": "The key is enabled again.",
    "key-expiry": "The key's expiry is changed.",
    "member-added": "The user is a member of the team now.",
    "member-removed": "The user is no longer a member of the team.",
    "policy-set": "The policy is saved; every replica applies it from its next request.",
    "policy-cleared": "The policy is removed.",
}
SESSION_ENDED = {
    "idle": "Your session ended after a while without use. Sign in again.",
    "expired": "Your session reached its time limit. Sign in again.",
    "key": "The admin key of your session is no longer valid. Sign in with a valid admin key.",
}


class SignInRequired(Exception):
    """No live session: answered with a redirect to the sign-in page."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason)
        self.reason = reason


class ForgedRequest(Exception):
    """A change without this session's anti-forgery token, or from another origin."""


@dataclass(frozen=True, slots=True)
class Context:
    """The signed-in admin of one request: session token (cookie), lookup and CSRF token."""

    token: str
    lookup: SessionLookup
    csrf: str

    @property
    def actor(self) -> str:
        return self.lookup.actor


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("tabpfn_gateway_server.console", "templates"),
        # Every value is escaped: a team named <script> renders as text.
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["number"] = lambda value: f"{int(value):,}"
    env.filters["size"] = _size
    return env


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(value: int) -> str:
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} TB"


async def _run(func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    # Store, vault and key hashing calls block; keep them off the event loop.
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form body (the only kind the console's forms send), last value wins."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("The console accepts url-encoded forms only.")
    body = (await request.body()).decode("utf-8", "replace")
    return {name: values[-1] for name, values in parse_qs(body, keep_blank_values=True).items()}


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date like 2030-01-31.") from None


def _start_of(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time.min, tzinfo=UTC)


class Console:
    """The console's handlers over one gateway; ``render`` adds what every page needs."""

    def __init__(self, gateway: Gateway, limiter: AttemptLimiter | None) -> None:
        self.gateway = gateway
        admin = gateway.admin
        self.sessions = AdminSessions.from_settings(gateway.settings, admin.store, admin.keys)
        self.limiter = limiter
        self.templates = _templates()

    # -- plumbing ----------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        context: Context | None,
        *,
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("notice", ""))
        html = self.templates.get_template(template).render(
            prefix=CONSOLE_PREFIX,
            ctx=context,
            csrf=context.csrf if context else "",
            notice=notice,
            path=request.url.path,
            **values,
        )
        return HTMLResponse(html, status_code=status)

    async def context(self, request: Request) -> Context:
        token = request.cookies.get(SESSION_COOKIE)
        lookup = await _run(self.sessions.resolve, token)
        if lookup.session is None or token is None:
            raise SignInRequired(lookup.ended if token else None)
        return Context(token=token, lookup=lookup, csrf=self.sessions.csrf_token(token))

    async def change(self, request: Request) -> tuple[Context, dict[str, str]]:
        """The context and form of a state-changing request, after the CSRF checks."""
        context = await self.context(request)
        form = await _form(request)
        if not same_origin(request) or not self.sessions.check_csrf(
            context.token, form.get("csrf_token")
        ):
            raise ForgedRequest()
        return context, form

    def secure(self, request: Request) -> bool:
        return is_secure(request, self.gateway.settings.public_url)

    # -- sign in and out ---------------------------------------------------------------

    async def sign_in_page(self, request: Request) -> Response:
        reason = SESSION_ENDED.get(request.query_params.get("ended", ""))
        return self._sign_in_form(request, error=None, info=reason)

    def _sign_in_form(
        self, request: Request, *, error: str | None, info: str | None = None, status: int = 200
    ) -> Response:
        pre = new_pre_session_token()
        response = self.render(
            request, "sign_in.html", None, status=status, error=error, info=info, pre=pre
        )
        set_cookie(response, PRE_SESSION_COOKIE, pre, secure=self.secure(request), max_age=3600)
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await _form(request)
        expected = request.cookies.get(PRE_SESSION_COOKIE)
        submitted = form.get("csrf_token", "")
        if (
            not same_origin(request)
            or not expected
            or not hmac.compare_digest(submitted.encode(), expected.encode())
        ):
            raise ForgedRequest()
        address = client_address(request)
        if self.limiter is not None:
            await _run(self.limiter.check, address)
        key = SecretStr(form.get("admin_key", ""))
        try:
            if not key.get_secret_value().strip():
                raise InvalidRequest("Enter an admin key.")
            opened = await _run(self.sessions.open, key)
        except (AuthenticationError, InsufficientScope, InvalidRequest) as exc:
            if self.limiter is not None:
                await _run(self.limiter.failed, address)
            message = (
                "That key is not an admin key (tpga_…)."
                if isinstance(exc, InsufficientScope)
                else "That admin key was not accepted."
                if isinstance(exc, AuthenticationError)
                else exc.message
            )
            return self._sign_in_form(request, error=message, status=http_status(exc))
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:
            # A new sign-in ends the browser's previous session rather than leaving it live.
            await _run(self.sessions.close, previous)
        response = RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=303)
        lifetime = opened.session.expires_at - opened.session.created_at
        set_cookie(
            response,
            SESSION_COOKIE,
            opened.token,
            secure=self.secure(request),
            max_age=max(int(lifetime.total_seconds()), 1),
        )
        response.delete_cookie(PRE_SESSION_COOKIE, path=CONSOLE_PREFIX)
        return response

    async def sign_out(self, request: Request) -> Response:
        context, _ = await self.change(request)
        await _run(self.sessions.close, context.token)
        response = RedirectResponse(f"{CONSOLE_PREFIX}/sign-in?notice=signed-out", 303)
        response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX)
        return response

    # -- overview ----------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        context = await self.context(request)
        try:
            days = int(request.query_params.get("days", "30"))
        except ValueError:
            days = 30
        if days not in PERIODS:
            days = 30
        data = await _run(_reports.load_overview, self.gateway, days)
        chart = daily_calls_svg(data.per_day)
        return self.render(
            request, "overview.html", context, overview=data, chart=chart, periods=PERIODS
        )

    # -- teams and users ---------------------------------------------------------------

    async def optional_context(self, request: Request) -> Context | None:
        """The signed-in admin if there is one (error pages keep their navigation)."""
        try:
            return await self.context(request)
        except (SignInRequired, GatewayError):
            return None

    async def principals(
        self, request: Request, *, error: str | None = None, typed: dict[str, str] | None = None
    ) -> Response:
        context = await self.context(request)
        kind = request.query_params.get("kind")
        kind = kind if kind in ("team", "user") else None
        principals = await _run(
            lambda: list(_reports.walk(self.gateway.admin.list_principals, kind=kind))
        )
        return self.render(
            request,
            "principals.html",
            context,
            status=400 if error else 200,
            principals=principals,
            kind=kind,
            error=error,
            typed=typed or {},
        )

    async def add_principal(self, request: Request) -> Response:
        context, form = await self.change(request)
        kind = form.get("kind", "team")
        try:
            principal = await _run(
                self.gateway.admin.add_principal,
                form.get("name", "").strip(),
                kind,  # the core refuses anything but user/team
                actor=context.actor,
            )
        except GatewayError as exc:
            return await self.principals(request, error=exc.message, typed=form)
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/principals/{principal.id}?notice=principal-added", 303
        )

    async def principal(
        self,
        request: Request,
        principal_id: str,
        *,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        context = await self.context(request)

        def load() -> dict[str, Any]:
            principal = self.gateway.admin.get_principal(principal_id)
            principals = _reports.principals_by_id(self.gateway)
            keys = _reports.key_views(_reports.keys_of(self.gateway, principal.id), principals)
            admin = self.gateway.admin
            if principal.kind == "team":
                memberships = [m.user_id for m in admin.list_members(principal.id)]
            else:
                memberships = [m.team_id for m in admin.teams_of(principal.id)]
            related = [principals[i] for i in memberships if i in principals]
            candidates = [
                p
                for p in principals.values()
                if p.kind == "user" and p.id not in memberships and principal.kind == "team"
            ]
            return {
                "principal": principal,
                "credentials": _reports.credentials_of(self.gateway, principal.id),
                "keys": keys,
                "related": sorted(related, key=lambda p: p.name),
                "candidates": sorted(candidates, key=lambda p: p.name),
                "policy": admin.get_policy(principal.id),
            }

        values = await _run(load)
        return self.render(
            request,
            "principal.html",
            context,
            status=status,
            error=error,
            scopes=ALL_SCOPES,
            default_scopes=DEFAULT_SCOPES,
            grace_choices=GRACE_CHOICES,
            **values,
        )

    async def add_credential(self, request: Request, principal_id: str) -> Response:
        context, form = await self.change(request)
        token = SecretStr(form.get("tabpfn_token", ""))
        verify = form.get("verify") == "on"
        try:
            await _run(
                self.gateway.admin.add_credential,
                principal_id,
                token,
                form.get("label", ""),
                verify=verify,
                actor=context.actor,
            )
        except GatewayError as exc:
            return await self.principal(
                request, principal_id, error=exc.message, status=http_status(exc)
            )
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/principals/{principal_id}?notice=credential-added", 303
        )

    async def add_hosted_credential(self, request: Request, principal_id: str) -> Response:
        """Store a self-hosted inference container (its ``/predict`` URL, an optional bearer
        token), asked for one tiny prediction first when ``verify`` is on (as the CLI does)."""
        context, form = await self.change(request)
        token_text = form.get("bearer_token", "")
        verifier = _hosted_verifier(self.gateway) if form.get("verify") == "on" else None
        try:
            await _run(
                self.gateway.admin.add_hosted_credential,
                principal_id,
                form.get("label", ""),
                endpoint_url=form.get("endpoint_url", ""),
                token=SecretStr(token_text) if token_text else None,
                verify=verifier,
                actor=context.actor,
            )
        except GatewayError as exc:
            return await self.principal(
                request, principal_id, error=exc.message, status=http_status(exc)
            )
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/principals/{principal_id}?notice=hosted-credential-added", 303
        )

    async def remove_credential(self, request: Request, credential_id: str) -> Response:
        context, _ = await self.change(request)
        credential = await _run(self.gateway.admin.get_credential, credential_id)
        await _run(self.gateway.admin.remove_credential, credential_id, actor=context.actor)
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/principals/{credential.owner_id}?notice=credential-removed", 303
        )

    # -- keys --------------------------------------------------------------------------

    async def keys(self, request: Request) -> Response:
        context = await self.context(request)
        owner = request.query_params.get("owner") or None

        def load() -> dict[str, Any]:
            principals = _reports.principals_by_id(self.gateway)
            owner_id = self.gateway.admin.get_principal(owner).id if owner else None
            keys = _reports.key_views(_reports.keys_of(self.gateway, owner_id), principals)
            return {"keys": keys, "principals": list(principals.values()), "owner": owner_id}

        values = await _run(load)
        return self.render(
            request,
            "keys.html",
            context,
            scopes=ALL_SCOPES,
            default_scopes=DEFAULT_SCOPES,
            grace_choices=GRACE_CHOICES,
            **values,
        )

    async def create_key(self, request: Request) -> Response:
        context, form = await self.change(request)
        owner_id = form.get("owner", "")
        wanted = [s for s in ALL_SCOPES if form.get(f"scope_{s}") == "on"]
        admin = SCOPE_ADMIN in wanted
        try:
            expires = _start_of(_day(form.get("expires_on"), "The expiry date"))

            created = await _run(
                self.gateway.admin.create_key,
                owner_id,
                form.get("credential_id") or None,
                form.get("name", ""),
                wanted or DEFAULT_SCOPES,
                expires,
                admin=admin,
                actor=context.actor,
            )
        except GatewayError as exc:
            return await self.principal(
                request, owner_id, error=exc.message, status=http_status(exc)
            )
        return self.render(
            request,
            "key_created.html",
            context,
            created=created,
            gateway_url=public_base_url(request),
            rotated=False,
        )

    async def key(self, request: Request, key_id: str, *, error: str | None = None) -> Response:
        context = await self.context(request)

        def load() -> dict[str, Any]:
            admin = self.gateway.admin
            key = admin.get_key(key_id)
            owner = admin.get_principal(key.owner_id)
            credential = None
            if key.credential_id is not None:
                try:
                    credential = admin.get_credential(key.credential_id)
                except CredentialNotFound:
                    credential = None  # removed: the page says so
            return {
                "view": _reports.KeyView(key, owner.name, _reports.key_state(key)),
                "owner": owner,
                "credential": credential,
                "usage": admin.summarize_usage(key_id=key.key_id),
                "audit": admin.list_audit(target_id=key.key_id, limit=10).items,
                "policy": admin.get_policy(key.key_id, kind="key"),
                "effective": admin.effective_policy(key.key_id),
                "budgets": _reports.budgets_over(
                    self.gateway, key, _reports.principals_by_id(self.gateway)
                ),
            }

        values = await _run(load)
        return self.render(
            request,
            "key.html",
            context,
            status=400 if error else 200,
            error=error,
            grace_choices=GRACE_CHOICES,
            **values,
        )

    async def set_key_expiry(self, request: Request, key_id: str) -> Response:
        context, form = await self.change(request)
        try:
            expires = (
                None
                if form.get("clear") == "on"
                else _start_of(_day(form.get("expires_on"), "The expiry date"))
            )
            if expires is None and form.get("clear") != "on":
                raise InvalidRequest("Choose a date, or tick 'no expiry'.")
            await _run(self.gateway.admin.set_key_expiry, key_id, expires, actor=context.actor)
        except InvalidRequest as exc:
            return await self.key(request, key_id, error=exc.message)
        return RedirectResponse(f"{CONSOLE_PREFIX}/keys/{key_id}?notice=key-expiry", 303)

    async def add_member(self, request: Request, principal_id: str) -> Response:
        context, form = await self.change(request)
        try:
            await _run(
                self.gateway.admin.add_member,
                principal_id,
                form.get("user", ""),
                actor=context.actor,
            )
        except GatewayError as exc:
            return await self.principal(
                request, principal_id, error=exc.message, status=http_status(exc)
            )
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/principals/{principal_id}?notice=member-added", 303
        )

    async def remove_member(self, request: Request, principal_id: str, user_id: str) -> Response:
        context, _ = await self.change(request)
        await _run(self.gateway.admin.remove_member, principal_id, user_id, actor=context.actor)
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/principals/{principal_id}?notice=member-removed", 303
        )

    async def set_policy(self, request: Request, target: str, kind: str) -> Response:
        context, form = await self.change(request)
        page = f"{CONSOLE_PREFIX}/{'keys' if kind == 'key' else 'principals'}/{target}"
        try:
            changes = _policy_changes(form, for_key=kind == "key")
            await _run(
                self.gateway.admin.set_policy,
                target,
                changes,
                kind=kind,
                actor=context.actor,
                replace=True,
            )
        except GatewayError as exc:
            if kind == "key":
                return await self.key(request, target, error=exc.message)
            return await self.principal(request, target, error=exc.message, status=http_status(exc))
        return RedirectResponse(f"{page}?notice=policy-set", 303)

    async def clear_policy(self, request: Request, target: str, kind: str) -> Response:
        context, _ = await self.change(request)
        await _run(self.gateway.admin.clear_policy, target, kind=kind, actor=context.actor)
        page = f"{CONSOLE_PREFIX}/{'keys' if kind == 'key' else 'principals'}/{target}"
        return RedirectResponse(f"{page}?notice=policy-cleared", 303)

    async def principal_policy(self, request: Request, principal_id: str) -> Response:
        return await self.set_policy(request, principal_id, "principal")

    async def principal_policy_clear(self, request: Request, principal_id: str) -> Response:
        return await self.clear_policy(request, principal_id, "principal")

    async def key_policy(self, request: Request, key_id: str) -> Response:
        return await self.set_policy(request, key_id, "key")

    async def key_policy_clear(self, request: Request, key_id: str) -> Response:
        return await self.clear_policy(request, key_id, "key")

    async def change_key(self, request: Request, key_id: str, action: str) -> Response:
        context, form = await self.change(request)
        operations: dict[str, Callable[..., Any]] = {
            "revoke": self.gateway.admin.revoke_key,
            "disable": self.gateway.admin.disable_key,
            "enable": self.gateway.admin.enable_key,
        }
        operation = operations.get(action)
        if operation is None:
            raise InvalidRequest(f"Unknown key action {action!r}.")
        await _run(operation, key_id, actor=context.actor)
        back = form.get("back", "")
        target = back if back.startswith(CONSOLE_PREFIX + "/") else f"{CONSOLE_PREFIX}/keys"
        separator = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{separator}notice=key-{action}d", 303)

    async def rotate_key(self, request: Request, key_id: str) -> Response:
        context, form = await self.change(request)
        try:
            hours = int(form.get("grace_hours", "24"))
        except ValueError:
            hours = -1
        if hours not in GRACE_CHOICES:
            raise InvalidRequest("Choose how long the old secret keeps working.")
        created = await _run(
            self.gateway.admin.rotate_key,
            key_id,
            grace=timedelta(hours=hours),
            actor=context.actor,
        )
        return self.render(
            request,
            "key_created.html",
            context,
            created=created,
            gateway_url=public_base_url(request),
            rotated=True,
            grace_hours=hours,
        )

    # -- usage -------------------------------------------------------------------------

    def _usage_filters(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        by = [d for d in params.getlist("by") if d] or list(DEFAULT_REPORT_BY)
        return {
            "owner": params.get("owner") or None,
            "key_id": params.get("key_id") or None,
            "since_day": _day(params.get("since"), "since"),
            "until_day": _day(params.get("until"), "until"),
            "by": by,
        }

    def _usage_report(self, filters: dict[str, Any]) -> Any:
        until_day = filters["until_day"]
        return self.gateway.admin.usage_report(
            filters["by"],
            since=_start_of(filters["since_day"]),
            # The form's "until" day is included: the report's bound is exclusive.
            until=_start_of(until_day + timedelta(days=1)) if until_day else None,
            key_id=filters["key_id"],
            principal=filters["owner"],
        )

    async def usage(self, request: Request) -> Response:
        context = await self.context(request)
        filters = self._usage_filters(request)

        def load() -> dict[str, Any]:
            principals = _reports.principals_by_id(self.gateway)
            return {
                "report": self._usage_report(filters),
                "principals": sorted(principals.values(), key=lambda p: p.name),
            }

        values = await _run(load)
        query = urlencode(
            [(k, v) for k, v in request.query_params.multi_items() if k in _USAGE_PARAMS and v]
        )
        return self.render(
            request,
            "usage.html",
            context,
            filters=filters,
            query=query,
            dimensions=REPORT_DIMENSIONS,
            **values,
        )

    async def usage_csv(self, request: Request) -> Response:
        await self.context(request)
        filters = self._usage_filters(request)
        report = await _run(self._usage_report, filters)
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="tabpfn-gateway-usage.csv"'},
        )

    # -- audit -------------------------------------------------------------------------

    async def audit(self, request: Request) -> Response:
        context = await self.context(request)
        params = request.query_params
        filters = {
            "actor": params.get("actor") or None,
            "action": params.get("action") or None,
            "target_id": params.get("target_id") or None,
        }
        page = await _run(
            self.gateway.admin.list_audit,
            limit=AUDIT_PAGE,
            cursor=params.get("cursor") or None,
            **filters,
        )
        next_query = None
        if page.next_cursor:
            next_query = urlencode(
                {**{k: v for k, v in filters.items() if v}, "cursor": page.next_cursor}
            )
        return self.render(
            request,
            "audit.html",
            context,
            events=page.items,
            filters=filters,
            next_query=next_query,
            first_page=not params.get("cursor"),
        )


_USAGE_PARAMS = ("owner", "key_id", "since", "until", "by")
_POLICY_NUMBERS = (
    "requests_per_minute",
    "requests_per_hour",
    "max_concurrent_fits",
    "budget_credits",
)


def _policy_changes(form: dict[str, str], *, for_key: bool) -> dict[str, Any]:
    """A policy form as the changes ``Admin.set_policy`` takes (it checks every value)."""
    changes: dict[str, Any] = {}
    for name in _POLICY_NUMBERS:
        text = form.get(name, "").strip().replace(",", "").replace("_", "")
        if not text:
            changes[name] = None
        elif text.isdigit():
            changes[name] = int(text)
        else:
            label = name.replace("_", " ")
            raise InvalidRequest(f"{label.capitalize()} must be a whole number, or empty.")
    for name in ("budget_period", "budget_window", "budget_mode", "budget_unit"):
        if form.get(name):
            changes[name] = form[name]
    thresholds = [t.strip().rstrip("%") for t in form.get("alert_thresholds", "").split(",")]
    if not all(t.isdigit() for t in thresholds if t):
        raise InvalidRequest("Alert thresholds are whole percents, e.g. 50, 80, 100.")
    changes["alert_thresholds"] = [int(t) for t in thresholds if t]
    if for_key:
        text = form.get("allowed_cidrs", "").replace(",", " ")
        changes["allowed_cidrs"] = text.split()
    return changes


def _hosted_verifier(gateway: Gateway) -> Callable[[Any], Any]:
    """The CLI's check of a container: one tiny prediction, at most 30 s to connect."""
    from tabpfn_gateway.hosted import verify_hosted_endpoint

    timeout = max(gateway.settings.upstream_connect_timeout_seconds, 30.0)

    def verify(endpoint: Any) -> Any:
        return verify_hosted_endpoint(endpoint, timeout=timeout)

    return verify


Handler = Callable[..., Awaitable[Response]]


def build_console_router(console: Console) -> APIRouter:
    """The console's routes (kept out of the OpenAPI document: they are pages, not API)."""
    router = APIRouter(prefix=CONSOLE_PREFIX, include_in_schema=False)
    c = console

    @router.get("")
    async def root() -> Response:
        return RedirectResponse(f"{CONSOLE_PREFIX}/", 307)

    router.add_api_route("/", c.overview, methods=["GET"])
    router.add_api_route("/sign-in", c.sign_in_page, methods=["GET"])
    router.add_api_route("/sign-in", c.sign_in, methods=["POST"])
    router.add_api_route("/sign-out", c.sign_out, methods=["POST"])
    router.add_api_route("/principals", c.principals, methods=["GET"])
    router.add_api_route("/principals", c.add_principal, methods=["POST"])
    router.add_api_route("/principals/{principal_id}", c.principal, methods=["GET"])
    router.add_api_route(
        "/principals/{principal_id}/credentials", c.add_credential, methods=["POST"]
    )
    router.add_api_route(
        "/principals/{principal_id}/hosted-credentials",
        c.add_hosted_credential,
        methods=["POST"],
    )
    router.add_api_route(
        "/credentials/{credential_id}/remove", c.remove_credential, methods=["POST"]
    )
    router.add_api_route("/keys", c.keys, methods=["GET"])
    router.add_api_route("/keys", c.create_key, methods=["POST"])
    router.add_api_route("/keys/{key_id}", c.key, methods=["GET"])
    router.add_api_route("/keys/{key_id}/rotate", c.rotate_key, methods=["POST"])
    router.add_api_route("/keys/{key_id}/expiry", c.set_key_expiry, methods=["POST"])
    router.add_api_route("/keys/{key_id}/policy", c.key_policy, methods=["POST"])
    router.add_api_route("/keys/{key_id}/policy/clear", c.key_policy_clear, methods=["POST"])
    router.add_api_route("/principals/{principal_id}/policy", c.principal_policy, methods=["POST"])
    router.add_api_route(
        "/principals/{principal_id}/policy/clear", c.principal_policy_clear, methods=["POST"]
    )
    router.add_api_route("/principals/{principal_id}/members", c.add_member, methods=["POST"])
    router.add_api_route(
        "/principals/{principal_id}/members/{user_id}/remove",
        c.remove_member,
        methods=["POST"],
    )
    router.add_api_route("/keys/{key_id}/{action}", c.change_key, methods=["POST"])
    router.add_api_route("/usage", c.usage, methods=["GET"])
    router.add_api_route("/usage.csv", c.usage_csv, methods=["GET"])
    router.add_api_route("/audit", c.audit, methods=["GET"])
    return router


def install_console_handlers(app: FastAPI, console: Console) -> None:
    """HTML answers for the console's own failures; everything else keeps the JSON body."""

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        query = f"?ended={exc.reason}" if exc.reason in SESSION_ENDED else ""
        response = RedirectResponse(f"{CONSOLE_PREFIX}/sign-in{query}", 303)
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX)
        return response

    async def forged(request: Request, exc: Exception) -> Response:
        logger.warning("Refused a console change without a valid anti-forgery token")
        return console.render(
            request,
            "error.html",
            None,
            status=403,
            code="CSRF_FAILED",
            message="This form has expired or did not come from this console. "
            "Go back, reload the page and try again.",
        )

    api_error_handler = app.exception_handlers.get(GatewayError)

    async def gateway_error(request: Request, exc: Exception) -> Response:
        # Pages answer core errors (an unknown key, a database outage) with a page; the API
        # keeps its JSON body.
        if not request.url.path.startswith(CONSOLE_PREFIX + "/") or api_error_handler is None:
            if api_error_handler is None:
                raise exc
            answer = api_error_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        assert isinstance(exc, GatewayError)
        return console.render(
            request,
            "error.html",
            await console.optional_context(request),
            status=http_status(exc),
            code=exc.error_code,
            message=exc.message,
        )

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(ForgedRequest, forged)
    app.add_exception_handler(GatewayError, gateway_error)
