"""`tabpfn-gateway` commands of this group (being built)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add this group's commands to the top-level parser."""
