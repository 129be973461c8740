"""Request and answer bodies of the gateway's own API (setup, admin, usage). No secrets out,
except a new key's plaintext, once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tabpfn_gateway.store import ApiKey, KeyState

__all__ = [
    "AuditEventOut",
    "CreatedKeyOut",
    "CredentialIn",
    "CredentialOut",
    "KeyIn",
    "KeyOut",
    "PageOut",
    "PrincipalIn",
    "PrincipalOut",
    "RotateIn",
    "SetupIn",
    "SetupOut",
    "UsageEventOut",
    "UsageSummaryOut",
    "page_of",
]

T = TypeVar("T")
R = TypeVar("R")

SHOWN_ONCE = "Store this key now: it is shown only once and cannot be recovered."


class PageOut(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next (null: last)."""

    items: list[T]
    next_cursor: str | None = None


def page_of(items: Sequence[R], next_cursor: str | None, convert: Callable[[R], T]) -> PageOut[T]:
    return PageOut[T](items=[convert(item) for item in items], next_cursor=next_cursor)


class _RecordOut(BaseModel):
    """An answer read off a store record: the fields it declares, by name, and no others
    (so a record's secret fields never reach an answer)."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls.model_validate(record)


# -- setup -------------------------------------------------------------------------------------


class SetupIn(BaseModel):
    """Self-service setup: your TabPFN token, and optionally a name for you."""

    tabpfn_token: SecretStr = Field(description="Your TabPFN API token (stored encrypted).")
    name: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "A label for you: your principal is named setup:<name>-<random> (default label: "
            "user), apart from the names administrators choose."
        ),
    )


class SetupOut(BaseModel):
    """The new gateway key, shown once, and what it belongs to."""

    api_key: str = Field(description=SHOWN_ONCE)
    key_id: str
    principal_id: str
    principal_name: str
    credential_id: str
    scopes: list[str]
    expires_at: datetime | None = None
    message: str = SHOWN_ONCE


# -- principals and credentials ----------------------------------------------------------------


class PrincipalIn(BaseModel):
    name: str = Field(max_length=100)
    kind: Literal["user", "team"] = "user"


class PrincipalOut(_RecordOut):
    id: str
    name: str
    kind: str
    created_at: datetime


class CredentialIn(BaseModel):
    """A TabPFN token (``kind: cloud``) or a self-hosted inference container (``hosted``)."""

    owner: str = Field(description="Principal id or name.")
    label: str = Field(max_length=100)
    kind: Literal["cloud", "hosted"] = Field(
        default="cloud",
        description="cloud: a TabPFN token; hosted: a self-hosted inference container.",
    )
    tabpfn_token: SecretStr | None = Field(
        default=None, description="cloud: the TabPFN token (required)."
    )
    endpoint_url: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "hosted: the container's /predict URL (required); cloud: this credential's own "
            "TabPFN API root (optional; default the gateway's upstream_url)."
        ),
    )
    bearer_token: SecretStr | None = Field(
        default=None, description="hosted: sent as 'Authorization: Bearer' (optional)."
    )
    extra_headers: dict[str, str] | None = Field(
        default=None, description="hosted: headers sent with every request (stored encrypted)."
    )
    timeout_seconds: float | None = Field(
        default=None, description="hosted: seconds one prediction may take."
    )
    connect_timeout_seconds: float | None = Field(
        default=None, description="hosted: seconds to connect."
    )
    verify: bool = Field(
        default=True,
        description="Check the token upstream (hosted: one tiny prediction) before storing.",
    )


class CredentialOut(_RecordOut):
    """A stored credential: its token (and a container's extra headers) never leave the vault."""

    id: str
    owner_id: str
    label: str
    kind: str = "cloud"
    endpoint_url: str | None = None
    timeout_seconds: float | None = None
    connect_timeout_seconds: float | None = None
    created_at: datetime
    verified_at: datetime | None = None


# -- keys ----------------------------------------------------------------------------------------


class KeyIn(BaseModel):
    owner: str = Field(description="Principal id or name.")
    credential_id: str | None = Field(
        default=None,
        description="The TabPFN credential calls go out with (default: the owner's only one; "
        "admin keys: none).",
    )
    name: str = Field(max_length=200)
    scopes: list[str] | None = Field(default=None, description="Default: inference, usage.")
    expires_at: datetime | None = None
    admin: bool = Field(default=False, description="An admin key (tpga_ prefix, admin scope).")


class ExpiryIn(BaseModel):
    """When a key stops working."""

    expires_at: datetime | None = Field(
        description="Timezone-aware and in the future; null: the key no longer expires."
    )


class RotateIn(BaseModel):
    grace_seconds: float = Field(
        default=86_400,
        ge=0,
        le=366 * 86_400,
        allow_inf_nan=False,
        description="How long the old secret keeps working (at most a year).",
    )
    request_id: str | None = Field(
        default=None,
        max_length=200,
        description="Retrying with the same id answers with the same new key.",
    )


class KeyOut(BaseModel):
    """A gateway key as stored: a public id and hints, never the secret or its hash."""

    key_id: str
    name: str
    owner_id: str
    owner_name: str | None = Field(
        default=None, description="The owner's name, beside its id (None if it was removed)."
    )
    credential_id: str | None
    scopes: list[str]
    display_prefix: str
    last4: str
    state: KeyState
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    disabled_at: datetime | None = None
    last_used_at: datetime | None = None
    rotated_at: datetime | None = None
    previous_valid_until: datetime | None = None

    @classmethod
    def of(cls, record: ApiKey, owner_name: str | None = None) -> KeyOut:
        fields = {
            name: getattr(record, name)
            for name in KeyOut.model_fields
            if name not in {"state", "owner_name"}
        }
        return KeyOut(**fields, state=record.state(), owner_name=owner_name)


class CreatedKeyOut(KeyOut):
    """A key just created or rotated, with its plaintext (shown this once)."""

    api_key: str = Field(description=SHOWN_ONCE)
    message: str = SHOWN_ONCE

    @classmethod
    def created(
        cls, record: ApiKey, plaintext: str, owner_name: str | None = None
    ) -> CreatedKeyOut:
        return cls(**KeyOut.of(record, owner_name).model_dump(), api_key=plaintext)


# -- usage and audit -----------------------------------------------------------------------------


class UsageEventOut(_RecordOut):
    id: str
    key_id: str
    owner_id: str
    credential_id: str | None
    operation: str
    status: int
    latency_ms: float
    rows: int | None
    columns: int | None
    bytes: int | None
    upstream_trace_id: str | None
    created_at: datetime
    credits: int | None = None
    #: The error code a refused or failed call was answered with; None when it succeeded
    #: (and on events recorded before error codes were kept).
    error_code: str | None = None


class UsageSummaryOut(_RecordOut):
    key_id: str
    operation: str
    calls: int
    errors: int
    rows: int
    bytes: int
    total_latency_ms: float
    credits: int = 0


class AuditEventOut(_RecordOut):
    id: str
    actor: str
    action: str
    target_type: str
    target_id: str
    created_at: datetime
    details: dict[str, Any]
