"""The records a store keeps: plain frozen dataclasses, shared by every store implementation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Generic, Literal, TypedDict, TypeVar

__all__ = [
    "AdminSession",
    "ApiKey",
    "AuditEvent",
    "BudgetClaim",
    "BudgetCounter",
    "BudgetMode",
    "BudgetPeriod",
    "BudgetUnit",
    "BudgetWindow",
    "CounterHit",
    "CredentialKind",
    "FittedModel",
    "KeyChanges",
    "KeyState",
    "Membership",
    "Page",
    "Policy",
    "PolicyTargetType",
    "Principal",
    "PrincipalKind",
    "PruneReport",
    "UpstreamCredential",
    "UsageEvent",
    "UsageRollup",
    "UsageSummary",
    "new_id",
    "utcnow",
]

PrincipalKind = Literal["user", "team"]
PolicyTargetType = Literal["principal", "key"]
BudgetPeriod = Literal["day", "month"]
BudgetWindow = Literal["calendar", "rolling"]
BudgetMode = Literal["hard", "soft"]
BudgetUnit = Literal["credits", "cells", "calls"]
#: What a credential reaches: the TabPFN cloud API, or a self-hosted inference container.
CredentialKind = Literal["cloud", "hosted"]
#: What a key is now: usable, or refused for one reason (revoked wins over disabled over expired).
KeyState = Literal["active", "revoked", "disabled", "expired"]
T = TypeVar("T")


def utcnow() -> datetime:
    """Timezone-aware now in UTC; every timestamp in a store is aware and in UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new random id (UUID4 as 32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list. ``next_cursor`` is opaque; None means this is the last page."""

    items: Sequence[T]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who owns keys, credentials and fitted models: a user or a team. ``name`` is unique."""

    id: str
    name: str
    kind: PrincipalKind = "user"
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class UpstreamCredential:
    """How to reach one upstream, its secret stored only encrypted (bound to this row's id).

    ``kind`` ``cloud``: ``encrypted_token`` holds a TabPFN token; ``endpoint_url`` is an
    optional per-credential base URL (None: the configured ``upstream_url``). ``kind``
    ``hosted``: a self-hosted inference container at ``endpoint_url`` (its ``/predict`` URL);
    ``encrypted_token`` holds a JSON object with the optional bearer token and extra headers
    (header values may be secrets too). ``timeout_seconds`` / ``connect_timeout_seconds``
    override the configured upstream timeouts for this credential when set.
    """

    id: str
    owner_id: str
    label: str
    encrypted_token: bytes = field(repr=False)
    created_at: datetime = field(default_factory=utcnow)
    verified_at: datetime | None = None
    kind: CredentialKind = "cloud"
    endpoint_url: str | None = None
    timeout_seconds: float | None = None
    connect_timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A gateway key. Only a hash of its secret is stored; ``key_id`` is public and unique.

    ``previous_*`` hold the secret replaced by the last rotation, valid until
    ``previous_valid_until`` (the grace window). ``rotation_request_id`` and
    ``rotation_ciphertext`` let a repeated rotation request answer with the same new key.
    ``credential_id`` is None for admin keys that never call the upstream.
    """

    key_id: str
    name: str
    owner_id: str
    credential_id: str | None
    scopes: tuple[str, ...]
    secret_hash: str = field(repr=False)
    hash_scheme: str
    display_prefix: str
    last4: str
    created_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    disabled_at: datetime | None = None
    last_used_at: datetime | None = None
    previous_secret_hash: str | None = field(default=None, repr=False)
    previous_hash_scheme: str | None = None
    previous_valid_until: datetime | None = None
    rotated_at: datetime | None = None
    rotation_request_id: str | None = None
    rotation_ciphertext: bytes | None = field(default=None, repr=False)

    def state(self, now: datetime | None = None) -> KeyState:
        """The one answer to "may this key be used at ``now``?" (default: the current time).

        Revoked outranks disabled, which outranks expired: a revoked key says so even after
        its expiry, since that is the reason it can never work again.
        """
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled_at is not None:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


class KeyChanges(TypedDict, total=False):
    """The fields ``Store.update_key`` may change (all others are fixed at creation)."""

    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    hash_scheme: str
    last4: str
    expires_at: datetime | None
    revoked_at: datetime | None
    disabled_at: datetime | None
    last_used_at: datetime | None
    previous_secret_hash: str | None
    previous_hash_scheme: str | None
    previous_valid_until: datetime | None
    rotated_at: datetime | None
    rotation_request_id: str | None
    rotation_ciphertext: bytes | None


@dataclass(frozen=True, slots=True)
class FittedModel:
    """The gateway's record that an upstream fit (its ``fitted_train_set_id``) belongs to a
    principal; any other principal is told it does not exist."""

    id: str
    owner_id: str
    credential_id: str
    key_id: str
    task: str
    n_rows: int | None = None
    n_cols: int | None = None
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One metered call through the gateway."""

    id: str
    key_id: str
    owner_id: str
    operation: str
    status: int
    latency_ms: float
    credential_id: str | None = None
    rows: int | None = None
    columns: int | None = None
    bytes: int | None = None
    upstream_trace_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    #: TabPFN credits the call was charged (settled figure); None where nothing is billed.
    credits: int | None = None
    #: The stable error code a refused or failed call was answered with (RATE_LIMITED,
    #: BUDGET_EXHAUSTED, UPSTREAM_UNAVAILABLE...); None when it succeeded. The status alone
    #: cannot tell a rate limit from a budget (both 429).
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """Usage added up per key (and operation) over a time range."""

    key_id: str
    operation: str
    calls: int
    errors: int
    rows: int
    bytes: int
    total_latency_ms: float
    credits: int = 0


@dataclass(frozen=True, slots=True)
class UsageRollup:
    """Usage of one key and operation on one UTC day: from raw events, or from the daily
    roll-up that keeps them after the raw events are pruned (both added together)."""

    day: date
    key_id: str
    owner_id: str
    operation: str
    calls: int
    errors: int
    rows: int
    bytes: int
    credits: int


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What ``Store.prune`` removed: raw usage events (first rolled up per day), audit events,
    and stale rate and budget counters."""

    usage_events: int
    audit_events: int
    counters: int


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's membership of a team (a team's budget and limits cover its members' keys)."""

    team_id: str
    user_id: str
    created_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Policy:
    """Spend governance for one principal (user or team) or one key. ``None`` is "no limit".

    Rate limits count requests per minute and per hour; ``max_concurrent_fits`` caps fits in
    flight; ``budget_credits`` is a budget per ``budget_period`` (``day`` or ``month``), a
    UTC calendar period or a rolling window (the last 24 hours / 30 days), counted in
    ``budget_unit``: TabPFN ``credits`` (cloud predictions), ``cells`` (rows x columns of
    every prediction, cloud or hosted) or ``calls`` (predictions);
    ``hard`` refuses past it, ``soft`` only alerts. ``alert_thresholds`` are percents of the
    budget that raise an alert once per period. ``allowed_cidrs`` (keys only) limit where a
    key may be used from.
    """

    target_id: str
    target_type: PolicyTargetType
    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    max_concurrent_fits: int | None = None
    budget_credits: int | None = None
    budget_period: BudgetPeriod = "month"
    budget_window: BudgetWindow = "calendar"
    budget_mode: BudgetMode = "hard"
    budget_unit: BudgetUnit = "credits"
    alert_thresholds: tuple[int, ...] = ()
    allowed_cidrs: tuple[str, ...] = ()
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class BudgetClaim:
    """One budget counter a reservation touches: ``amount`` credits on ``subject_id``'s
    ``bucket`` (e.g. ``"month:2026-12"``). With ``limit``, the reservation succeeds only if
    spent + reserved (+ the ``window`` buckets' spent + reserved: earlier buckets of a rolling
    window) + amount stays within it; with ``limit=None`` it always succeeds (soft budgets)."""

    subject_id: str
    bucket: str
    amount: int
    limit: int | None = None
    window: tuple[str, ...] = ()
    #: When the bucket stops counting for any window (``prune`` may drop it then).
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    """Credits settled (``spent``) and held by calls in flight (``reserved``) in one bucket;
    ``alerted`` is the highest alert threshold (percent) already raised for it."""

    subject_id: str
    bucket: str
    spent: int = 0
    reserved: int = 0
    alerted: int = 0


@dataclass(frozen=True, slots=True)
class CounterHit:
    """One shared counter a request increments: ``name`` (e.g. ``"rpm:<key id>:<minute>"``)
    by ``amount``, allowed up to ``limit``; ``expires_at`` lets ``prune`` drop it later."""

    name: str
    limit: int
    expires_at: datetime
    amount: int = 1


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Who did what to which object, and when. ``details`` never holds a secret."""

    id: str
    actor: str
    action: str
    target_type: str
    target_id: str
    created_at: datetime = field(default_factory=utcnow)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A signed-in admin console session. ``id`` is a hash of the session token (the token
    itself lives only in the browser's cookie); ``key_id`` is the admin key it was opened
    with, so the session ends when that key stops being usable."""

    id: str
    key_id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
