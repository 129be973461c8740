"""Helpers shared by the store implementations: cursors, argument checks, key-change fields."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from tabpfn_gateway.errors import InvalidRequest
from tabpfn_gateway.store.base import MAX_PAGE_SIZE
from tabpfn_gateway.store.records import BudgetClaim, KeyChanges, UsageRollup

__all__ = [
    "KEY_CHANGE_FIELDS",
    "check_amount",
    "check_aware",
    "check_claim",
    "check_json",
    "check_key_changes",
    "check_limit",
    "check_scopes",
    "check_session_filters",
    "day_bounds",
    "decode_cursor",
    "encode_cursor",
    "merge_rollups",
    "normalize_record",
]

R = TypeVar("R")

# Every field KeyChanges may carry; anything else in an update is a caller bug.
KEY_CHANGE_FIELDS: frozenset[str] = frozenset(KeyChanges.__annotations__)


def check_limit(limit: int) -> int:
    """``limit`` itself if it is an int in 1..MAX_PAGE_SIZE, else ``InvalidRequest``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}, got {limit!r}.")
    return limit


def check_aware(value: datetime | None, name: str) -> datetime | None:
    """``value`` converted to UTC; a naive datetime is refused (its zone would be a guess)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidRequest(f"{name} must be a datetime, got {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest(f"{name} must be timezone-aware (UTC), got a naive datetime.")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 has no UTC spelling
        raise InvalidRequest(f"{name} is outside the representable dates in UTC.") from None


def encode_cursor(created_at: datetime, record_id: str) -> str:
    """The opaque cursor pointing just past a record (the last one of a page)."""
    payload = json.dumps([created_at.astimezone(UTC).isoformat(), record_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points past; a malformed cursor is ``InvalidRequest``."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, record_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        when = datetime.fromisoformat(created)
        if not isinstance(record_id, str) or when.tzinfo is None:
            raise ValueError("bad cursor fields")
        when = when.astimezone(UTC)
    except (ValueError, TypeError, UnicodeError, OverflowError, binascii.Error) as exc:
        raise InvalidRequest(
            "The cursor is malformed; pass a next_cursor returned by a list call."
        ) from exc
    return when.astimezone(UTC), record_id


def check_key_changes(changes: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``changes`` as a plain dict, refusing fields ``update_key`` may not touch; timestamps
    are checked to be aware and converted to UTC."""
    unknown = sorted(set(changes) - KEY_CHANGE_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"{name} names fields a key update cannot change: {', '.join(unknown)}."
        )
    checked: dict[str, Any] = {}
    for field_name, value in changes.items():
        if (
            isinstance(value, datetime)
            or field_name.endswith("_at")
            or field_name.endswith("_until")
        ):
            checked[field_name] = check_aware(value, f"{name}[{field_name!r}]")
        elif field_name == "scopes":
            checked[field_name] = check_scopes(value)
        else:
            checked[field_name] = value
    return checked


def normalize_record(record: R) -> R:
    """``record`` with every datetime field checked to be aware and converted to UTC, so
    every store hands back the same thing whatever zone came in."""
    updates: dict[str, Any] = {}
    for field in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, field.name)
        if isinstance(value, datetime):
            aware = check_aware(value, f"{type(record).__name__}.{field.name}")
            if aware is not value and (aware is None or aware.tzinfo is not value.tzinfo):
                updates[field.name] = aware
    return dataclasses.replace(record, **updates) if updates else record  # type: ignore[type-var]


def check_json(details: Any) -> dict[str, Any]:
    """``details`` as it comes back from a JSON column (a fresh copy), so every store returns
    the same thing; anything that is not a JSON object is ``InvalidRequest``."""
    if not isinstance(details, dict):
        raise InvalidRequest(f"Audit details must be a dict, got {type(details).__name__}.")
    try:
        copied = json.loads(json.dumps(details, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            "Audit details must be JSON-serialisable (strings, numbers, bools, None, "
            "lists and dicts with string keys)."
        ) from exc
    assert isinstance(copied, dict)
    return copied


def check_scopes(scopes: Any) -> tuple[str, ...]:
    """``scopes`` as a tuple of strings; a bare string is refused (it is not a list of one)."""
    if not isinstance(scopes, str | bytes) and isinstance(scopes, Iterable):
        values: tuple[Any, ...] = tuple(scopes)
        if all(isinstance(scope, str) for scope in values):
            return values
    raise InvalidRequest("scopes must be a sequence of strings, e.g. ('fit', 'predict').")


def check_amount(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{name} must be a non-negative integer, got {value!r}.")
    return value


def check_claim(claim: BudgetClaim) -> BudgetClaim:
    check_amount(claim.amount, "amount")
    if claim.limit is not None:
        check_amount(claim.limit, "limit")
    return claim


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def day_bounds(since: datetime | None, until: datetime | None) -> tuple[date | None, date | None]:
    """Day rows whose day starts in [since, until)."""
    since = check_aware(since, "since")
    until = check_aware(until, "until")
    since_day = None
    if since is not None:
        since_day = since.date()
        if since != datetime(since_day.year, since_day.month, since_day.day, tzinfo=UTC):
            since_day += timedelta(days=1)
    until_day = None
    if until is not None:
        until_day = until.date()
        if until != datetime(until_day.year, until_day.month, until_day.day, tzinfo=UTC):
            until_day += timedelta(days=1)
    return since_day, until_day


def merge_rollups(rows: Sequence[Any]) -> list[UsageRollup]:
    """Rows of (day, key, owner, operation, sums) added up per group, sorted."""
    totals: dict[tuple[date, str, str, str], list[int]] = {}
    for row in rows:
        group = (_as_date(row["day"]), row["key_id"], row["owner_id"], row["operation"])
        sums = totals.setdefault(group, [0, 0, 0, 0, 0])
        for index, name in enumerate(("calls", "errors", "rows", "bytes", "credits")):
            sums[index] += int(row[name] or 0)
    return [
        UsageRollup(
            day=group[0],
            key_id=group[1],
            owner_id=group[2],
            operation=group[3],
            calls=sums[0],
            errors=sums[1],
            rows=sums[2],
            bytes=sums[3],
            credits=sums[4],
        )
        for group, sums in sorted(
            totals.items(), key=lambda item: (item[0][0], item[0][1], item[0][3], item[0][2])
        )
    ]


def check_session_filters(
    session_id: str | None, key_id: str | None, expires_before: datetime | None
) -> None:
    """Refuse a ``delete_admin_sessions`` call with no filter (it would end every session)."""
    if session_id is None and key_id is None and expires_before is None:
        raise InvalidRequest("delete_admin_sessions needs session_id, key_id or expires_before.")
