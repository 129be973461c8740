"""Gateway keys: the ``tpg_`` key format, hashing, and the KeyManager that verifies them."""

from __future__ import annotations

from tabpfn_gateway.keys.format import KEY_PATTERN, ParsedKey, parse_key
from tabpfn_gateway.keys.manager import (
    ALL_SCOPES,
    DEFAULT_SCOPES,
    ROTATION_REPLAY_WINDOW,
    SCOPE_ADMIN,
    SCOPE_INFERENCE,
    SCOPE_USAGE,
    CreatedKey,
    KeyManager,
)

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_SCOPES",
    "KEY_PATTERN",
    "ROTATION_REPLAY_WINDOW",
    "SCOPE_ADMIN",
    "SCOPE_INFERENCE",
    "SCOPE_USAGE",
    "CreatedKey",
    "KeyManager",
    "ParsedKey",
    "parse_key",
]
