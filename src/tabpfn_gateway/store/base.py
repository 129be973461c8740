"""The Store protocol: what the core needs from persistence, with each method's contract.

General contract, for every implementation:

- Lookups return ``None`` for "not found"; they never raise for it. Domain errors
  (``KeyNotFound``...) are the core's business, not the store's.
- Inserting a record whose unique field is taken (an id, a principal name, a key id) raises
  ``tabpfn_gateway.errors.Conflict`` and changes nothing.
- A store that cannot reach its database raises ``StoreUnavailable``; any other failure of
  the database layer is ``StoreError``. No SQLAlchemy or driver exception reaches a caller.
- Timestamps go in and come out timezone-aware in UTC. Records come out equal (``==``) to
  the records that went in.
- Lists are paginated: ``limit`` (1..1000) items at most, newest first (``created_at``
  descending, then id descending), and ``cursor`` is the ``next_cursor`` of the previous
  page. Walking all pages yields every matching record exactly once, even while new records
  are added.
- Every single call is atomic. ``atomic()`` groups several calls: if its block raises, none
  of the writes made through it remain.
- Implementations are safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable

from tabpfn_gateway.store.records import (
    AdminSession,
    ApiKey,
    AuditEvent,
    BudgetClaim,
    BudgetCounter,
    CounterHit,
    FittedModel,
    KeyChanges,
    Membership,
    Page,
    Policy,
    Principal,
    PrincipalKind,
    PruneReport,
    UpstreamCredential,
    UsageEvent,
    UsageRollup,
    UsageSummary,
)

__all__ = ["CHANGES_COUNTER", "MAX_PAGE_SIZE", "Store"]

MAX_PAGE_SIZE = 1000
#: The counter every change to what authorises a call (keys, credentials, policies) bumps in
#: its own transaction; every process polls it (``gateway._changes``).
CHANGES_COUNTER = "changes"


@runtime_checkable
class Store(Protocol):
    """Persistence for principals, upstream credentials, keys, fits, usage, audit and admin
    console sessions."""

    # -- lifecycle ---------------------------------------------------------------------

    def ping(self) -> None:
        """Return if the database answers a trivial query; else raise ``StoreUnavailable``."""
        ...

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...

    def atomic(self) -> AbstractContextManager[Store]:
        """A block whose writes all land or, if it raises, none do.

        Yields a store to make the calls through (possibly ``self``). Nesting joins the
        outer block. The exception that aborted the block propagates unchanged.
        """
        ...

    # -- principals --------------------------------------------------------------------

    def add_principal(self, principal: Principal) -> Principal:
        """Insert ``principal`` and return it. Id or name taken: ``Conflict``."""
        ...

    def get_principal(self, principal_id: str) -> Principal | None:
        """The principal with this id, or None."""
        ...

    def get_principal_by_name(self, name: str) -> Principal | None:
        """The principal with this exact (case-sensitive) name, or None."""
        ...

    def list_principals(
        self, *, kind: PrincipalKind | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[Principal]:
        """Principals, optionally only of one kind, newest first, paginated."""
        ...

    # -- upstream credentials ----------------------------------------------------------

    def add_credential(self, credential: UpstreamCredential) -> UpstreamCredential:
        """Insert ``credential``; a missing owner or a taken id is ``Conflict``."""
        ...

    def get_credential(self, credential_id: str) -> UpstreamCredential | None:
        """The credential with this id, or None."""
        ...

    def list_credentials(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[UpstreamCredential]:
        """Credentials, optionally of one owner, newest first, paginated."""
        ...

    def iter_credentials(self) -> Iterator[UpstreamCredential]:
        """Every credential (for re-encryption), in a stable order; reads in batches."""
        ...

    def update_credential_ciphertexts(self, ciphertexts: Mapping[str, bytes]) -> int:
        """Replace ``encrypted_token`` of each credential id given, all or none, in one
        transaction. Returns how many rows were updated; an unknown id updates nothing and
        is not counted."""
        ...

    def mark_credential_verified(self, credential_id: str, verified_at: datetime) -> bool:
        """Set ``verified_at``. False if there is no such credential."""
        ...

    def delete_credential(self, credential_id: str) -> bool:
        """Delete the credential. False if there was none. Keys bound to it remain, with
        ``credential_id`` kept (the core refuses them: their credential is gone)."""
        ...

    # -- gateway keys ------------------------------------------------------------------

    def add_key(self, key: ApiKey) -> ApiKey:
        """Insert ``key``; its owner must exist (else ``Conflict``). Key id taken: ``Conflict``."""
        ...

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this public key id, or None. One indexed lookup, whatever the count."""
        ...

    def list_keys(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[ApiKey]:
        """Keys, optionally of one owner, newest first, paginated."""
        ...

    def update_key(
        self, key_id: str, changes: KeyChanges, *, expected: KeyChanges | None = None
    ) -> ApiKey | None:
        """Apply ``changes`` and return the updated key, or None if there is no such key.

        With ``expected``, the update happens only if each named field currently has the
        given value (compare-and-set); otherwise nothing changes and the current key is
        returned unchanged, so the caller can tell by comparing.
        """
        ...

    def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        """Set ``last_used_at`` of many keys in one write, never moving it backwards.
        Unknown key ids are ignored."""
        ...

    # -- fitted models -----------------------------------------------------------------

    def add_fitted_model(self, model: FittedModel) -> FittedModel:
        """Record that an upstream fit belongs to ``model.owner_id``. Id taken: ``Conflict``."""
        ...

    def get_fitted_model(self, model_id: str) -> FittedModel | None:
        """The fitted-model record with this upstream id, or None."""
        ...

    def list_fitted_models(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[FittedModel]:
        """Fitted models, optionally of one owner, newest first, paginated."""
        ...

    # -- usage -------------------------------------------------------------------------

    def record_usage(self, events: Sequence[UsageEvent]) -> None:
        """Append usage events, all in one transaction."""
        ...

    def list_usage(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[UsageEvent]:
        """Usage events matching every filter given (``since`` inclusive, ``until``
        exclusive; ``errors_only``: answered with a status of 400 or more), newest first,
        paginated."""
        ...

    def summarize_usage(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummary]:
        """Usage added up per (key id, operation) over the filters, sorted by key id then
        operation. ``errors`` counts events with status >= 400; None rows/bytes/credits
        count 0. Raw events only (see ``usage_rollup`` for pruned history)."""
        ...

    def usage_rollup(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRollup]:
        """Usage per (UTC day, key id, owner id, operation): raw events added to the daily
        roll-ups that ``prune`` kept of pruned events, so history survives pruning. Days
        are selected by their start (``since`` inclusive, ``until`` exclusive; raw events by
        their time). Sorted by day, key id, operation."""
        ...

    def prune(self, before: datetime) -> PruneReport:
        """Delete raw usage events and audit events older than ``before``, in one
        transaction; usage events are first added to the daily roll-ups (``usage_rollup``
        answers the same before and after). Rate and budget counters whose time is past
        are dropped too."""
        ...

    # -- governance: policies and team membership ---------------------------------------

    def put_policy(self, policy: Policy) -> Policy:
        """Insert or replace the policy of ``policy.target_id`` and return it."""
        ...

    def get_policy(self, target_id: str) -> Policy | None:
        """The policy of a principal or key id, or None."""
        ...

    def list_policies(self, *, target_ids: Sequence[str] | None = None) -> list[Policy]:
        """Policies (only of these targets, if given: one query for a key, its owner and
        its teams), sorted by target id."""
        ...

    def delete_policy(self, target_id: str) -> bool:
        """Remove a policy. False if there was none."""
        ...

    def add_membership(self, membership: Membership) -> Membership:
        """Make a user a member of a team. Already a member, or a principal missing:
        ``Conflict``."""
        ...

    def remove_membership(self, team_id: str, user_id: str) -> bool:
        """End a membership. False if there was none."""
        ...

    def list_memberships(
        self, *, team_id: str | None = None, user_id: str | None = None
    ) -> list[Membership]:
        """Memberships (of one team and/or one user), sorted by team id then user id."""
        ...

    # -- governance: shared counters (budgets, rate limits, concurrency) ------------------

    def reserve_budget(self, claims: Sequence[BudgetClaim]) -> int | None:
        """Reserve every claim's amount, all or nothing, and return None; or, when a claim's
        limit refuses, reserve nothing and return that claim's index.

        Each claim is one conditional write (``UPDATE ... SET reserved = reserved + :x
        WHERE spent + reserved + :x <= :limit``), never read-then-write: concurrent
        callers, threads, processes or replicas cannot together pass a limit.
        """
        ...

    def settle_budget(self, claims: Sequence[BudgetClaim], spent: int) -> list[BudgetCounter]:
        """Release each claim's reservation and add ``spent`` credits to its bucket (0 is a
        refund), in one transaction; return the counters as they now stand, in claim order."""
        ...

    def get_budget_counters(self, subject_id: str, buckets: Sequence[str]) -> list[BudgetCounter]:
        """The counters of these buckets of a subject (zeros for buckets never used), in the
        order asked."""
        ...

    def mark_budget_alert(self, subject_id: str, bucket: str, threshold: int) -> bool:
        """Record that the ``threshold`` alert was raised for a bucket; True only for the one
        caller that moved it up (every replica may try, one alert goes out)."""
        ...

    def hit_counters(self, hits: Sequence[CounterHit]) -> tuple[int | None, list[int]]:
        """Add each hit's amount to its named counter, all or nothing: ``(None, counts
        after)``; or, when a counter would pass its limit, ``(its index, counts as they
        stand)`` and nothing changes. One conditional write per counter."""
        ...

    def release_counters(self, amounts: Mapping[str, int]) -> None:
        """Subtract amounts from named counters (never below zero): concurrency slots."""
        ...

    # -- audit -------------------------------------------------------------------------

    def record_audit(self, event: AuditEvent) -> None:
        """Append one audit event."""
        ...

    def list_audit(
        self,
        *,
        target_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        """Audit events matching every filter given, newest first, paginated."""
        ...

    # -- deployment state (secret fingerprint, change counter) ---------------------------

    def claim_state(self, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless a value is there already; return the stored
        value either way (the first writer wins, also under concurrency)."""
        ...

    def get_state(self, name: str) -> str | None:
        """The value stored under ``name``, or None."""
        ...

    def put_state(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing any value there."""
        ...

    def bump_counter(self, name: str) -> int:
        """Add one to the counter ``name`` (created at 0) in one atomic write; return it."""
        ...

    def read_counter(self, name: str) -> int:
        """The counter ``name`` (0 if it was never bumped). Cheap: replicas poll it."""
        ...

    # -- upload ids --------------------------------------------------------------------

    def add_upload_owner(self, upload_id: str, owner_id: str, kind: str) -> None:
        """Record that ``owner_id`` may use ``upload_id`` (it prepared it, or sent the same
        content and was answered the upstream's duplicate id). Idempotent."""
        ...

    def is_upload_owner(self, upload_id: str, owner_id: str) -> bool:
        """Whether ``add_upload_owner(upload_id, owner_id, ...)`` was recorded."""
        ...

    # -- admin console sessions --------------------------------------------------------

    def add_admin_session(self, session: AdminSession) -> AdminSession:
        """Insert ``session``. Id taken: ``Conflict``."""
        ...

    def get_admin_session(self, session_id: str) -> AdminSession | None:
        """The session with this id, or None."""
        ...

    def touch_admin_session(self, session_id: str, last_seen_at: datetime) -> bool:
        """Set ``last_seen_at``, never moving it backwards. False if there is no such session."""
        ...

    def delete_admin_sessions(
        self,
        *,
        session_id: str | None = None,
        key_id: str | None = None,
        expires_before: datetime | None = None,
    ) -> int:
        """Delete the sessions matching every filter given (at least one is required, else
        ``InvalidRequest``); ``expires_before`` matches ``expires_at < expires_before``.
        Returns how many were deleted."""
        ...
