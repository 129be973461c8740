"""Governance routes: policies and team membership (admin), usage reports as JSON or CSV
(admin), retention, and a key holder's own spend and remaining budget."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tabpfn_gateway.errors import InvalidRequest
from tabpfn_gateway.gateway import Caller, Gateway
from tabpfn_gateway.governance import BudgetStatus, EffectivePolicy, UsageReport, report_csv
from tabpfn_gateway.store.records import Membership, Policy
from tabpfn_gateway_server.deps import AdminCaller, BearerKey, GatewayDep
from tabpfn_gateway_server.schemas import UsageSummaryOut

__all__ = ["router"]

T = TypeVar("T")

router = APIRouter()
_ADMIN = "/api/v1/admin"
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or refused key."},
    403: {"description": "The key lacks the admin scope (INSUFFICIENT_SCOPE)."},
}

Since = Annotated[datetime | None, Query(description="From (inclusive), with a timezone.")]
Until = Annotated[datetime | None, Query(description="To (exclusive), with a timezone.")]


async def _run(func: Callable[..., T], /, *args: object, **kwargs: object) -> T:
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidRequest(f"{name} needs a timezone (e.g. 2030-01-01T00:00:00Z).")
    return value


# -- answer and request models --------------------------------------------------------------------


class PolicyIn(BaseModel):
    """Fields to set; omitted fields keep their value, ``null`` removes a limit."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=0)
    requests_per_hour: int | None = Field(default=None, ge=0)
    max_concurrent_fits: int | None = Field(default=None, ge=0)
    budget_credits: int | None = Field(default=None, ge=0, le=10**15)
    budget_period: Literal["day", "month"] | None = None
    budget_window: Literal["calendar", "rolling"] | None = None
    budget_mode: Literal["hard", "soft"] | None = None
    budget_unit: Literal["credits", "cells", "calls"] | None = None
    alert_thresholds: list[int] | None = Field(default=None, max_length=20)
    allowed_cidrs: list[str] | None = Field(default=None, max_length=100)


class PolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    target_id: str
    target_type: str
    requests_per_minute: int | None
    requests_per_hour: int | None
    max_concurrent_fits: int | None
    budget_credits: int | None
    budget_period: str
    budget_window: str
    budget_mode: str
    budget_unit: str = "credits"
    alert_thresholds: list[int]
    allowed_cidrs: list[str]
    updated_at: datetime


class PolicySourceOut(BaseModel):
    level: str
    name: str
    policy: PolicyOut


class EffectivePolicyOut(BaseModel):
    """The tightest-of view of what applies to a key, and every policy it came from."""

    key_id: str
    requests_per_minute: int | None
    requests_per_hour: int | None
    max_concurrent_fits: int | None
    allowed_cidrs: list[list[str]]
    sources: list[PolicySourceOut]

    @classmethod
    def of(cls, effective: EffectivePolicy) -> EffectivePolicyOut:
        return cls(
            key_id=effective.key_id,
            requests_per_minute=effective.requests_per_minute,
            requests_per_hour=effective.requests_per_hour,
            max_concurrent_fits=effective.max_concurrent_fits,
            allowed_cidrs=[list(a) for a in effective.allowed_cidrs],
            sources=[
                PolicySourceOut(
                    level=s.level, name=s.name, policy=PolicyOut.model_validate(s.policy)
                )
                for s in effective.sources
            ],
        )


class MemberIn(BaseModel):
    user: str = Field(description="User principal id or name.", max_length=200)


class MembershipOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    team_id: str
    user_id: str
    created_at: datetime


class BudgetOut(BaseModel):
    level: str
    budget: int
    period: str
    window: str
    mode: str
    spent: int
    reserved: int
    remaining: int
    resets_at: datetime
    unit: str = "credits"

    @classmethod
    def of(cls, status: BudgetStatus) -> BudgetOut:
        return cls(
            level=status.level,
            budget=status.budget,
            period=status.period,
            window=status.window,
            mode=status.mode,
            spent=status.spent,
            reserved=status.reserved,
            remaining=status.remaining,
            resets_at=status.resets_at,
            unit=status.unit,
        )


class KeyUsageOut(BaseModel):
    """A key holder's own view: usage per operation, totals, and the budgets over the key."""

    key_id: str
    since: datetime | None
    until: datetime | None
    calls: int
    credits: int
    operations: list[UsageSummaryOut]
    budgets: list[BudgetOut]


class ReportRowOut(BaseModel):
    group: dict[str, str]
    calls: int
    errors: int
    credits: int
    rows: int
    bytes: int


class UsageReportOut(BaseModel):
    by: list[str]
    since: datetime | None
    until: datetime | None
    rows: list[ReportRowOut]
    total: ReportRowOut

    @classmethod
    def of(cls, report: UsageReport) -> UsageReportOut:
        def row(r: Any) -> ReportRowOut:
            return ReportRowOut(
                group=r.group,
                calls=r.calls,
                errors=r.errors,
                credits=r.credits,
                rows=r.rows,
                bytes=r.bytes,
            )

        return cls(
            by=list(report.by),
            since=report.since,
            until=report.until,
            rows=[row(r) for r in report.rows],
            total=row(report.total),
        )


class PruneIn(BaseModel):
    older_than_days: float = Field(ge=1, le=100_000, description="Keep this many days.")


class PruneOut(BaseModel):
    usage_events: int
    audit_events: int
    counters: int


def _policy_out(policy: Policy) -> PolicyOut:
    return PolicyOut.model_validate(policy)


# -- policies -------------------------------------------------------------------------------------

PolicyKind = Literal["principals", "keys"]


def _kind(kind: PolicyKind) -> Literal["principal", "key"]:
    return "key" if kind == "keys" else "principal"


@router.get(
    f"{_ADMIN}/policies",
    tags=["Governance"],
    response_model=list[PolicyOut],
    responses=_ADMIN_ERRORS,
)
async def list_policies(gateway: GatewayDep, caller: AdminCaller) -> list[PolicyOut]:
    return [_policy_out(p) for p in await _run(gateway.admin.list_policies)]


@router.put(
    f"{_ADMIN}/policies/{{kind}}/{{target}}",
    tags=["Governance"],
    response_model=PolicyOut,
    responses=_ADMIN_ERRORS,
)
async def set_policy(
    kind: PolicyKind, target: str, body: PolicyIn, gateway: GatewayDep, caller: AdminCaller
) -> PolicyOut:
    """Set a principal's (id or name) or key's policy; fields omitted keep their value."""
    changes = body.model_dump(exclude_unset=True)
    policy = await _run(
        gateway.admin.set_policy, target, changes, kind=_kind(kind), actor=caller.actor
    )
    return _policy_out(policy)


@router.get(
    f"{_ADMIN}/policies/{{kind}}/{{target}}",
    tags=["Governance"],
    response_model=PolicyOut,
    responses={404: {"description": "No such target, or it has no policy."}, **_ADMIN_ERRORS},
)
async def get_policy(
    kind: PolicyKind, target: str, gateway: GatewayDep, caller: AdminCaller
) -> PolicyOut:
    from tabpfn_gateway.errors import NotFound

    policy = await _run(gateway.admin.get_policy, target, kind=_kind(kind))
    if policy is None:
        raise NotFound("This target has no policy (no limits apply of its own).")
    return _policy_out(policy)


@router.delete(
    f"{_ADMIN}/policies/{{kind}}/{{target}}",
    tags=["Governance"],
    status_code=204,
    responses=_ADMIN_ERRORS,
)
async def clear_policy(
    kind: PolicyKind, target: str, gateway: GatewayDep, caller: AdminCaller
) -> Response:
    await _run(gateway.admin.clear_policy, target, kind=_kind(kind), actor=caller.actor)
    return Response(status_code=204)


@router.get(
    f"{_ADMIN}/keys/{{key_id}}/effective-policy",
    tags=["Governance"],
    response_model=EffectivePolicyOut,
    responses=_ADMIN_ERRORS,
)
async def effective_policy(
    key_id: str, gateway: GatewayDep, caller: AdminCaller
) -> EffectivePolicyOut:
    """The tightest of the key's, its owner's and its teams' policies."""
    return EffectivePolicyOut.of(await _run(gateway.admin.effective_policy, key_id))


# -- teams ----------------------------------------------------------------------------------------


@router.get(
    f"{_ADMIN}/teams/{{team}}/members",
    tags=["Governance"],
    response_model=list[MembershipOut],
    responses=_ADMIN_ERRORS,
)
async def list_members(team: str, gateway: GatewayDep, caller: AdminCaller) -> list[MembershipOut]:
    members: list[Membership] = await _run(gateway.admin.list_members, team)
    return [MembershipOut.model_validate(m) for m in members]


@router.post(
    f"{_ADMIN}/teams/{{team}}/members",
    tags=["Governance"],
    status_code=201,
    response_model=MembershipOut,
    responses=_ADMIN_ERRORS,
)
async def add_member(
    team: str, body: MemberIn, gateway: GatewayDep, caller: AdminCaller
) -> MembershipOut:
    membership = await _run(gateway.admin.add_member, team, body.user, actor=caller.actor)
    return MembershipOut.model_validate(membership)


@router.delete(
    f"{_ADMIN}/teams/{{team}}/members/{{user}}",
    tags=["Governance"],
    status_code=204,
    responses=_ADMIN_ERRORS,
)
async def remove_member(team: str, user: str, gateway: GatewayDep, caller: AdminCaller) -> Response:
    await _run(gateway.admin.remove_member, team, user, actor=caller.actor)
    return Response(status_code=204)


# -- reports and retention ------------------------------------------------------------------------


@router.get(
    f"{_ADMIN}/usage/report",
    tags=["Governance"],
    response_model=UsageReportOut,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv."},
        **_ADMIN_ERRORS,
    },
)
async def usage_report(
    gateway: GatewayDep,
    caller: AdminCaller,
    by: Annotated[
        str,
        Query(
            max_length=200,
            description="Comma-separated: principal, team, key, operation, day, month.",
        ),
    ] = "",
    since: Since = None,
    until: Until = None,
    key_id: Annotated[str | None, Query(max_length=200)] = None,
    principal: Annotated[str | None, Query(max_length=200)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    """Credits, calls, errors, rows and bytes rolled up as asked (daily roll-ups included)."""
    report = await _run(
        gateway.admin.usage_report,
        by,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        key_id=key_id,
        principal=principal,
    )
    if format == "csv":
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage-report.csv"'},
        )
    return UsageReportOut.of(report)


@router.post(
    f"{_ADMIN}/prune", tags=["Governance"], response_model=PruneOut, responses=_ADMIN_ERRORS
)
async def prune(body: PruneIn, gateway: GatewayDep, caller: AdminCaller) -> PruneOut:
    """Delete raw usage and audit events older than ``older_than_days`` (roll-ups stay)."""
    report = await _run(
        gateway.admin.prune, timedelta(days=body.older_than_days), actor=caller.actor
    )
    return PruneOut(
        usage_events=report.usage_events,
        audit_events=report.audit_events,
        counters=report.counters,
    )


# -- a key's own usage ----------------------------------------------------------------------------


async def _usage_caller(gateway: GatewayDep, key: BearerKey) -> Caller:
    from tabpfn_gateway.keys import SCOPE_USAGE

    return await gateway.proxy.authenticate(key, scope=SCOPE_USAGE)


UsageCaller = Annotated[Caller, Depends(_usage_caller)]


@router.get("/api/v1/usage/summary", tags=["Usage"], response_model=KeyUsageOut)
async def own_usage_summary(
    gateway: GatewayDep, caller: UsageCaller, since: Since = None, until: Until = None
) -> KeyUsageOut:
    """Your key's usage per operation, its credits, and the budgets over it with what is
    left this period (needs the ``usage`` scope); ``tabpfn_gateway.get_usage()`` reads it."""
    since, until = _aware(since, "since"), _aware(until, "until")

    def summarize(gw: Gateway) -> KeyUsageOut:
        # Admin flushes this process's buffered events first, as for every usage read.
        rows = gw.admin.summarize_usage(key_id=caller.key_id, since=since, until=until)
        engine = gw.policy_engine
        budgets = engine.budget_status(caller.key) if engine is not None else []
        return KeyUsageOut(
            key_id=caller.key_id,
            since=since,
            until=until,
            calls=sum(r.calls for r in rows),
            credits=sum(r.credits for r in rows),
            operations=[UsageSummaryOut.of(r) for r in rows],
            budgets=[BudgetOut.of(b) for b in budgets],
        )

    return await _run(summarize, gateway)
