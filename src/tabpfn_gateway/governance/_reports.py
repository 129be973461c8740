"""Usage reports: credits, calls, rows and bytes rolled up by principal, team, key, operation,
day or month, from raw events and the daily roll-ups that survive pruning."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tabpfn_gateway.errors import InvalidRequest
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import UsageRollup

__all__ = [
    "REPORT_DIMENSIONS",
    "ReportDimension",
    "UsageReport",
    "UsageReportRow",
    "build_usage_report",
    "parse_dimensions",
    "report_csv",
]

ReportDimension = Literal["principal", "team", "key", "operation", "day", "month"]
REPORT_DIMENSIONS: tuple[ReportDimension, ...] = (
    "principal",
    "team",
    "key",
    "operation",
    "day",
    "month",
)
#: What a user in no team is reported under when grouping by team.
NO_TEAM = "(no team)"
_MEASURES = ("calls", "errors", "credits", "rows", "bytes")


@dataclass(frozen=True, slots=True)
class UsageReportRow:
    """One group of a report: the group's value per dimension, and its sums."""

    group: dict[str, str]
    calls: int
    errors: int
    credits: int
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A usage report: grouped ``rows`` (sorted by group) and ``total`` over everything.

    With ``team`` among the dimensions, a user's usage counts under each team they belong to
    (so the team rows can add up to more than the total) and under "(no team)" if none.
    """

    by: tuple[ReportDimension, ...]
    since: datetime | None
    until: datetime | None
    rows: tuple[UsageReportRow, ...]
    total: UsageReportRow


def parse_dimensions(value: str | Sequence[str]) -> tuple[ReportDimension, ...]:
    """``"team,day"`` or ``["team", "day"]`` as checked dimensions, in the order given."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    found: list[ReportDimension] = []
    for part in parts:
        name = part.strip().lower()
        if not name:
            continue
        if name not in REPORT_DIMENSIONS:
            raise InvalidRequest(
                f"Unknown report dimension {name[:40]!r}; use {', '.join(REPORT_DIMENSIONS)}."
            )
        if name not in found:
            found.append(name)
    if "day" in found and "month" in found:
        raise InvalidRequest("Group by day or by month, not both.")
    return tuple(found)


def build_usage_report(
    store: Store,
    by: Sequence[ReportDimension],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    key_id: str | None = None,
    owner_id: str | None = None,
) -> UsageReport:
    """Roll usage up by ``by`` (empty: one total row) over ``[since, until)``."""
    dims = tuple(by)
    rollups = store.usage_rollup(key_id=key_id, owner_id=owner_id, since=since, until=until)
    names: dict[str, str] = {}
    kinds: dict[str, str] = {}
    teams_of: dict[str, list[str]] = {}

    def name_of(principal_id: str) -> str:
        if principal_id not in names:
            principal = store.get_principal(principal_id)
            names[principal_id] = principal.name if principal is not None else principal_id
            kinds[principal_id] = principal.kind if principal is not None else "user"
        return names[principal_id]

    def teams(owner: str) -> list[str]:
        if owner not in teams_of:
            name_of(owner)
            if kinds.get(owner) == "team":
                teams_of[owner] = [name_of(owner)]
            else:
                members = store.list_memberships(user_id=owner)
                teams_of[owner] = [name_of(m.team_id) for m in members] or [NO_TEAM]
        return teams_of[owner]

    groups: dict[tuple[str, ...], list[int]] = {}
    total = [0] * len(_MEASURES)
    for rollup in rollups:
        sums = _sums(rollup)
        total = [a + b for a, b in zip(total, sums, strict=True)]
        team_values = teams(rollup.owner_id) if "team" in dims else [""]
        for team in team_values:
            values: list[str] = []
            for dim in dims:
                if dim == "principal":
                    values.append(name_of(rollup.owner_id))
                elif dim == "team":
                    values.append(team)
                elif dim == "key":
                    values.append(rollup.key_id)
                elif dim == "operation":
                    values.append(rollup.operation)
                elif dim == "day":
                    values.append(rollup.day.isoformat())
                else:
                    values.append(rollup.day.strftime("%Y-%m"))
            row = groups.setdefault(tuple(values), [0] * len(_MEASURES))
            for index, value in enumerate(sums):
                row[index] += value
    rows = tuple(
        _row(dict(zip(dims, values, strict=True)), sums) for values, sums in sorted(groups.items())
    )
    return UsageReport(by=dims, since=since, until=until, rows=rows, total=_row({}, total))


def _sums(rollup: UsageRollup) -> list[int]:
    return [rollup.calls, rollup.errors, rollup.credits, rollup.rows, rollup.bytes]


def _row(group: dict[str, str], sums: Sequence[int]) -> UsageReportRow:
    return UsageReportRow(group, *sums)


def report_csv(report: UsageReport) -> str:
    """The report as CSV: one column per dimension, then the measures; a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.by, *_MEASURES])
    for row in report.rows:
        writer.writerow(
            [
                *(_safe_cell(row.group[d]) for d in report.by),
                row.calls,
                row.errors,
                row.credits,
                row.rows,
                row.bytes,
            ]
        )
    return buffer.getvalue()


def _safe_cell(value: str) -> str:
    # A name starting with = + - @ would run as a formula in a spreadsheet (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
