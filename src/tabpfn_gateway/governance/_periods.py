"""Budget periods: which counter bucket a moment falls in, which earlier buckets a rolling
window adds, and when a period resets (the Retry-After of BUDGET_EXHAUSTED)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tabpfn_gateway.store.records import BudgetPeriod, BudgetWindow

__all__ = ["BudgetSpan", "budget_span"]

_ROLLING_DAY_HOURS = 24
_ROLLING_MONTH_DAYS = 30


@dataclass(frozen=True, slots=True)
class BudgetSpan:
    """Where spend at a moment is counted: ``bucket`` (the counter a reservation writes),
    ``window`` (earlier buckets that still count: rolling windows only), ``resets_at`` (when
    the oldest spend stops counting) and ``expires_at`` (when the bucket counts for nothing)."""

    bucket: str
    window: tuple[str, ...]
    resets_at: datetime
    expires_at: datetime


def budget_span(period: BudgetPeriod, window: BudgetWindow, now: datetime) -> BudgetSpan:
    """The span of a budget at ``now`` (UTC calendar periods, or rolling windows of the
    last 24 hours in hourly buckets / the last 30 days in daily buckets)."""
    now = now.astimezone(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if window == "calendar":
        if period == "day":
            tomorrow = today + timedelta(days=1)
            return BudgetSpan(f"day:{today:%Y-%m-%d}", (), tomorrow, tomorrow)
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return BudgetSpan(f"month:{first:%Y-%m}", (), following, following)
    if period == "day":
        hour = now.replace(minute=0, second=0, microsecond=0)
        earlier = tuple(
            f"hour:{hour - timedelta(hours=n):%Y-%m-%dT%H}" for n in range(1, _ROLLING_DAY_HOURS)
        )
        return BudgetSpan(
            f"hour:{hour:%Y-%m-%dT%H}",
            earlier,
            hour + timedelta(hours=1),
            hour + timedelta(hours=_ROLLING_DAY_HOURS),
        )
    earlier = tuple(
        f"rday:{today - timedelta(days=n):%Y-%m-%d}" for n in range(1, _ROLLING_MONTH_DAYS)
    )
    return BudgetSpan(
        f"rday:{today:%Y-%m-%d}",
        earlier,
        today + timedelta(days=1),
        today + timedelta(days=_ROLLING_MONTH_DAYS),
    )
