"""What the console's pages show, read through the core (Admin, KeyManager, the usage store).

Kept in one module so the pages never reach into the core themselves. The per-day and
per-principal totals are added up here from raw usage events over the period; the governance
report (daily roll-ups, credits, budgets) replaces this when the core offers it.
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
# The overview reads at most this many raw events per period (a safety valve until daily
# roll-ups exist); past it the page says the figures are partial.
MAX_OVERVIEW_EVENTS = 200_000
RECENT_PROBLEMS = 10


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
    now = now or utcnow()
    if key.revoked_at is not None:
        return "revoked"
    if key.disabled_at is not None:
        return "disabled"
    if key.expires_at is not None and now >= key.expires_at:
        return "expired"
    return "active"


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
    active_keys: int = 0
    partial: bool = False


def load_overview(gateway: Gateway, days: int, now: datetime | None = None) -> Overview:
    """Totals per principal and per UTC day over the last ``days`` days, the latest refused
    or failed calls, and the active keys that expire soonest."""
    now = now or utcnow()
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    overview = Overview(days=days, since=since, until=now)
    principals = principals_by_id(gateway)
    gateway.usage.flush()  # this replica's buffered calls first, so a reader sees its own
    by_owner: dict[str, PrincipalTotal] = {}
    by_day_calls = {first_day + timedelta(days=i): 0 for i in range(days)}
    by_day_errors = dict.fromkeys(by_day_calls, 0)
    for seen, event in enumerate(walk(gateway.store.list_usage, since=since), start=1):
        if seen > MAX_OVERVIEW_EVENTS:
            overview.partial = True
            break
        failed = event.status >= 400
        owner = principals.get(event.owner_id)
        total = by_owner.get(event.owner_id)
        if total is None:
            total = by_owner[event.owner_id] = PrincipalTotal(
                event.owner_id,
                owner.name if owner else event.owner_id,
                owner.kind if owner else "?",
            )
        total.calls += 1
        total.errors += failed
        total.rows += event.rows or 0
        total.bytes += event.bytes or 0
        day = event.created_at.astimezone(UTC).date()
        if day in by_day_calls:
            by_day_calls[day] += 1
            by_day_errors[day] += failed
        if failed and len(overview.problems) < RECENT_PROBLEMS:
            overview.problems.append(ProblemView(event, owner.name if owner else event.owner_id))
    overview.totals = sorted(by_owner.values(), key=lambda t: (-t.calls, t.name))
    overview.per_day = [DayTotal(d, by_day_calls[d], by_day_errors[d]) for d in by_day_calls]
    overview.calls = sum(t.calls for t in overview.totals)
    overview.errors = sum(t.errors for t in overview.totals)
    keys = list(walk(gateway.keys.list))
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
    """Calls, errors, rows, bytes and latency per key and operation over the filters."""
    gateway.usage.flush()
    return gateway.store.summarize_usage(owner_id=owner_id, key_id=key_id, since=since, until=until)


def credentials_of(gateway: Gateway, owner_id: str) -> list[UpstreamCredential]:
    """The principal's stored TabPFN credentials (records only: the token stays encrypted)."""
    return list(walk(gateway.admin.list_credentials, owner=owner_id))


def keys_of(gateway: Gateway, owner_id: str | None) -> list[ApiKey]:
    """Keys, of one principal or all, newest first."""
    return list(walk(gateway.keys.list, owner=owner_id))
