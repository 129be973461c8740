"""What the console's pages show, read through the core's ``Admin`` service.

Kept in one module so the pages never reach into the core themselves. The per-day and
per-principal totals are added up here from raw usage events over the period; the governance
report (daily roll-ups, budgets) replaces this when ``Admin`` offers it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from tabpfn_gateway.gateway import Gateway
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
    "DayTotal",
    "KeyView",
    "Overview",
    "PrincipalTotal",
    "key_state",
    "load_overview",
    "principals_by_id",
]

T = TypeVar("T")

_PAGE = 1000
RECENT_PROBLEMS = 10
# The latest refusals are looked for among this many of the newest events.
PROBLEM_SCAN = 250


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
    calls: int = 0
    errors: int = 0
    credits: int = 0
    active_keys: int = 0


def load_overview(gateway: Gateway, days: int, now: datetime | None = None) -> Overview:
    """Totals per principal and per UTC day over the last ``days`` days (from the store's
    daily roll-up: one grouped query, pruned history included), the latest refused or failed
    calls, and the active keys that expire soonest."""
    now = now or utcnow()
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    overview = Overview(days=days, since=since, until=now)
    principals = principals_by_id(gateway)
    admin = gateway.admin
    # Until Admin offers the governance report, the roll-up is read from Admin's store; the
    # usage read first writes this replica's buffered events, so a reader sees its own calls.
    recent = admin.list_usage(since=since, limit=PROBLEM_SCAN)
    by_owner: dict[str, PrincipalTotal] = {}
    by_day_calls = {first_day + timedelta(days=i): 0 for i in range(days)}
    by_day_errors = dict.fromkeys(by_day_calls, 0)
    for row in admin.store.usage_rollup(since=since):
        owner = principals.get(row.owner_id)
        total = by_owner.get(row.owner_id)
        if total is None:
            total = by_owner[row.owner_id] = PrincipalTotal(
                row.owner_id,
                owner.name if owner else row.owner_id,
                owner.kind if owner else "?",
            )
        total.calls += row.calls
        total.errors += row.errors
        total.rows += row.rows
        total.bytes += row.bytes
        total.credits += row.credits
        if row.day in by_day_calls:
            by_day_calls[row.day] += row.calls
            by_day_errors[row.day] += row.errors
    for event in recent.items:
        if event.status >= 400 and len(overview.problems) < RECENT_PROBLEMS:
            owner = principals.get(event.owner_id)
            overview.problems.append(ProblemView(event, owner.name if owner else event.owner_id))
    overview.totals = sorted(by_owner.values(), key=lambda t: (-t.credits, -t.calls, t.name))
    overview.per_day = [DayTotal(d, by_day_calls[d], by_day_errors[d]) for d in by_day_calls]
    overview.calls = sum(t.calls for t in overview.totals)
    overview.errors = sum(t.errors for t in overview.totals)
    overview.credits = sum(t.credits for t in overview.totals)
    keys = list(walk(admin.list_keys))
    views = [v for v in key_views(keys, principals) if v.state == "active"]
    overview.active_keys = len(views)
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
