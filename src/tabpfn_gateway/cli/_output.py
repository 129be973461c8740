"""Output helpers for the CLI: human tables by default, JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["add_json_flag", "emit", "print_table", "to_jsonable"]


def add_json_flag(parser: Any) -> None:
    """Add the shared ``--json`` flag to a subcommand parser."""
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def to_jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601, tuples as lists, bytes never (they may be ciphertext)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items() if not isinstance(v, bytes)}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Print rows as an aligned plain-text table."""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not rows:
        print("(none)")


def emit(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
) -> None:
    """Print one record or a list of records, as JSON or as a table / key-value lines."""
    if as_json:
        json.dump(to_jsonable(data), sys.stdout, indent=2, sort_keys=True)
        print()
        return
    if isinstance(data, Mapping):
        width = max((len(k) for k in data), default=0)
        for k, v in data.items():
            if not isinstance(v, bytes):
                print(f"{k.ljust(width)}  {_cell(v)}")
        return
    print_table(data, columns or (list(data[0].keys()) if data else []))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
