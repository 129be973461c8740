"""What the console's pages show, read through the core's ``Admin`` service.

Kept in one module so the pages never reach into the core themselves: usage comes from
``Admin.usage_report`` (daily roll-ups, pruned history included), budgets from
``Admin.budget_status``, policies and teams from their ``Admin`` methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.governance import BudgetStatus
from tabpfn_gateway.store.records import (
    ApiKey,
    Page,
    Principal,
    UpstreamCredential,
    UsageEvent,
    UsageSummary,
    utcnow,
)

__all__ = [
    "BudgetOver",
    "DayTotal",
    "KeyView",
    "Overview",
    "PrincipalTotal",
    "budgets_over",
    "key_state",
    "load_overview",
    "principals_by_id",
]

T = TypeVar("T")

_PAGE = 1000
RECENT_PROBLEMS = 10
# Budgets are looked up for at most this many active keys on the overview.
MAX_BUDGET_KEYS = 200


def walk(list_page: Callable[..., Page[T]], **filters: object) -> Iterator[T]:
    """Every item of a paginated core list, following cursors."""
    cursor: str | None = None
    while True:
        page = list_page(limit=_PAGE, cursor=cursor, **filters)
        yield from page.items
        cursor = page.next_cursor
        if cursor is None or not page.items:
            return


def principals_by_id(gateway: Gateway) -> dict[str, Principal]:
    """Every principal, by id (names are shown beside ids everywhere)."""
    return {p.id: p for p in walk(gateway.admin.list_principals)}


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    """active, disabled, revoked or expired: what the key list shows."""
    return key.state(now)


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key as a row of the key tables: the record, its owner's name and its state."""

    key: ApiKey
    owner: str
    state: str


def key_views(keys: list[ApiKey], principals: dict[str, Principal]) -> list[KeyView]:
    now = utcnow()
    return [
        KeyView(
            k,
            principals[k.owner_id].name if k.owner_id in principals else k.owner_id,
            key_state(k, now),
        )
        for k in keys
    ]


@dataclass(slots=True)
class PrincipalTotal:
    """Calls, errors, rows and bytes of one principal over the period."""

    principal_id: str
    name: str
    kind: str
    calls: int = 0
    errors: int = 0
    rows: int = 0
    bytes: int = 0
    credits: int = 0


@dataclass(frozen=True, slots=True)
class DayTotal:
    """Calls and errors on one UTC day."""

    day: date
    calls: int
    errors: int


@dataclass(frozen=True, slots=True)
class ProblemView:
    """A refused or failed call: when, whose key, which operation, what status."""

    event: UsageEvent
    owner: str


@dataclass(slots=True)
class Overview:
    """Everything the overview page shows for one period."""

    days: int
    since: datetime
    until: datetime
    totals: list[PrincipalTotal] = field(default_factory=list)
    per_day: list[DayTotal] = field(default_factory=list)
    problems: list[ProblemView] = field(default_factory=list)
    keys_expiring: list[KeyView] = field(default_factory=list)
    budgets: list[BudgetView] = field(default_factory=list)
    calls: int = 0
    errors: int = 0
    credits: int = 0
    active_keys: int = 0


@dataclass(frozen=True, slots=True)
class BudgetView:
    """One budget and how much of it is used (spent plus reserved) this period."""

    level: str
    name: str
    budget: int
    used: int
    mode: str
    period: str
    resets_at: datetime
    href: str
    unit: str = "credits"

    @property
    def percent(self) -> int:
        return min(100 * self.used // self.budget, 999) if self.budget else 100


@dataclass(frozen=True, slots=True)
class BudgetOver:
    """A budget over a key, named as people know it: the core names its target by id (the
    key's, or the owner's or team's principal id); the pages show the key's or principal's
    name, its kind (key, user or team) and link to the page the budget is set on."""

    status: BudgetStatus
    name: str
    kind: str
    href: str

    @property
    def target_id(self) -> str:
        return self.status.name


def name_budget(status: BudgetStatus, key: ApiKey, principals: dict[str, Principal]) -> BudgetOver:
    """``status`` (one of ``key``'s budgets) with its target's name, kind and page."""
    if status.level == "key":
        return BudgetOver(status, key.name, "key", f"/keys/{key.key_id}")
    principal = principals.get(status.name)
    if principal is None:  # removed since the policy was read: show what the core gave
        return BudgetOver(status, status.name, status.level, f"/principals/{status.name}")
    return BudgetOver(status, principal.name, principal.kind, f"/principals/{principal.id}")


def budgets_over(
    gateway: Gateway, key: ApiKey, principals: dict[str, Principal]
) -> list[BudgetOver]:
    """Every budget over ``key`` (its own, its owner's, its teams'), named."""
    return [name_budget(s, key, principals) for s in gateway.admin.budget_status(key.key_id)]


def budget_views(
    gateway: Gateway, keys: list[KeyView], principals: dict[str, Principal], limit: int
) -> list[BudgetView]:
    """The budgets over these keys (their own, their owner's, their teams'), most used first;
    a budget over several keys (a team's) is listed once."""
    found: dict[str, BudgetView] = {}
    for view in keys[:MAX_BUDGET_KEYS]:
        for named in budgets_over(gateway, view.key, principals):
            status = named.status
            budget = BudgetView(
                named.kind,
                named.name,
                status.budget,
                status.spent + status.reserved,
                status.mode,
                status.period,
                status.resets_at,
                named.href,
                status.unit,
            )
            found.setdefault(named.target_id, budget)
    return sorted(found.values(), key=lambda b: (-b.percent, b.name))[:limit]


def load_overview(gateway: Gateway, days: int, now: datetime | None = None) -> Overview:
    """Credits and calls per principal and per UTC day over the last ``days`` days (the
    governance usage report), the budgets nearest their limit, the latest refused or failed
    calls, and the active keys that expire soonest."""
    now = now or utcnow()
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    overview = Overview(days=days, since=since, until=now)
    principals = principals_by_id(gateway)
    by_name = {p.name: p for p in principals.values()}
    admin = gateway.admin
    per_principal = admin.usage_report("principal", since=since)
    per_day = {row.group["day"]: row for row in admin.usage_report("day", since=since).rows}
    for row in per_principal.rows:
        name = row.group["principal"]
        principal = by_name.get(name)
        overview.totals.append(
            PrincipalTotal(
                principal.id if principal else name,
                name,
                principal.kind if principal else "?",
                calls=row.calls,
                errors=row.errors,
                rows=row.rows,
                bytes=row.bytes,
                credits=row.credits,
            )
        )
    overview.totals.sort(key=lambda t: (-t.credits, -t.calls, t.name))
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        found = per_day.get(day.isoformat())
        overview.per_day.append(
            DayTotal(day, found.calls if found else 0, found.errors if found else 0)
        )
    total = per_principal.total
    overview.calls, overview.errors, overview.credits = total.calls, total.errors, total.credits
    # The period's latest refusals and failures, however many calls succeeded since.
    for event in admin.list_usage(since=since, errors_only=True, limit=RECENT_PROBLEMS).items:
        owner = principals.get(event.owner_id)
        overview.problems.append(ProblemView(event, owner.name if owner else event.owner_id))
    keys = list(walk(admin.list_keys))
    views = [v for v in key_views(keys, principals) if v.state == "active"]
    overview.active_keys = len(views)
    overview.budgets = budget_views(gateway, views, principals, 5)
    expiring = [v for v in views if v.key.expires_at is not None]
    overview.keys_expiring = sorted(expiring, key=lambda v: v.key.expires_at or now)[:5]
    return overview


def usage_summary(
    gateway: Gateway,
    *,
    owner_id: str | None,
    key_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[UsageSummary]:
    """Calls, errors, rows, bytes, credits and latency per key and operation."""
    return gateway.admin.summarize_usage(owner=owner_id, key_id=key_id, since=since, until=until)


def credentials_of(gateway: Gateway, owner_id: str) -> list[UpstreamCredential]:
    """The principal's stored TabPFN credentials (records only: the token stays encrypted)."""
    return list(walk(gateway.admin.list_credentials, owner=owner_id))


def keys_of(gateway: Gateway, owner_id: str | None) -> list[ApiKey]:
    """Keys, of one principal or all, newest first."""
    return list(walk(gateway.admin.list_keys, owner=owner_id))
