"""An in-memory Store for tests, notebooks and the offline demo: dicts behind one lock."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from tabpfn_gateway.errors import Conflict, InvalidRequest, StoreError
from tabpfn_gateway.store._common import (
    check_amount,
    check_aware,
    check_claim,
    check_json,
    check_key_changes,
    check_limit,
    check_scopes,
    check_session_filters,
    day_bounds,
    decode_cursor,
    encode_cursor,
    merge_rollups,
    normalize_record,
)
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

__all__ = ["MemoryStore"]

R = TypeVar("R")


@dataclasses.dataclass
class _Tables:
    """Everything a MemoryStore holds; copied whole to snapshot an ``atomic()`` block."""

    principals: dict[str, Principal] = dataclasses.field(default_factory=dict)
    principal_names: dict[str, str] = dataclasses.field(default_factory=dict)
    credentials: dict[str, UpstreamCredential] = dataclasses.field(default_factory=dict)
    keys: dict[str, ApiKey] = dataclasses.field(default_factory=dict)
    fitted_models: dict[str, FittedModel] = dataclasses.field(default_factory=dict)
    usage: dict[str, UsageEvent] = dataclasses.field(default_factory=dict)
    audit: dict[str, AuditEvent] = dataclasses.field(default_factory=dict)
    usage_daily: dict[tuple[Any, ...], UsageRollup] = dataclasses.field(default_factory=dict)
    policies: dict[str, Policy] = dataclasses.field(default_factory=dict)
    memberships: dict[tuple[str, str], Membership] = dataclasses.field(default_factory=dict)
    budgets: dict[tuple[str, str], BudgetCounter] = dataclasses.field(default_factory=dict)
    budget_expiry: dict[tuple[str, str], datetime | None] = dataclasses.field(default_factory=dict)
    counters: dict[str, tuple[int, datetime]] = dataclasses.field(default_factory=dict)
    admin_sessions: dict[str, AdminSession] = dataclasses.field(default_factory=dict)
    state: dict[str, str] = dataclasses.field(default_factory=dict)
    state_counters: dict[str, int] = dataclasses.field(default_factory=dict)
    # (upload id, principal) -> kind
    upload_owners: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def copy(self) -> _Tables:
        # Records are frozen, so shallow copies of the dicts are a full snapshot.
        return _Tables(**{f.name: dict(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _newest_first(record: Any) -> tuple[datetime, str]:
    return (record.created_at, _record_id(record))


def _record_id(record: Any) -> str:
    return str(record.key_id if isinstance(record, ApiKey) else record.id)


def _paginate(
    records: Iterable[R], predicate: Callable[[R], bool], limit: int, cursor: str | None
) -> Page[R]:
    """Keyset pagination over (created_at, id) descending, the same order the SQL store uses."""
    check_limit(limit)
    after = decode_cursor(cursor) if cursor is not None else None
    matching = sorted((r for r in records if predicate(r)), key=_newest_first, reverse=True)
    if after is not None:
        matching = [r for r in matching if _newest_first(r) < after]
    items = matching[:limit]
    next_cursor = None
    if len(matching) > limit:
        last = items[-1]
        next_cursor = encode_cursor(*_newest_first(last))
    return Page(items=items, next_cursor=next_cursor)


def _within(when: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or when >= since) and (until is None or when < until)


class MemoryStore:
    """A ``Store`` in process memory. Thread-safe (one re-entrant lock); nothing persists.

    ``atomic()`` holds the lock for the whole block and restores a snapshot if the block
    raises, so other threads never see a half-done block.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tables = _Tables()
        self._atomic_depth = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"MemoryStore(principals={len(self._tables.principals)}, keys={len(self._tables.keys)})"
        )

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("This store is closed.")

    def ping(self) -> None:
        self._check_open()

    def close(self) -> None:
        self._closed = True

    @contextmanager
    def atomic(self) -> Iterator[MemoryStore]:
        with self._lock:
            self._check_open()
            if self._atomic_depth:
                # Nested blocks join the outer one: only the outermost snapshot counts.
                self._atomic_depth += 1
                try:
                    yield self
                finally:
                    self._atomic_depth -= 1
                return
            snapshot = self._tables.copy()
            self._atomic_depth = 1
            try:
                yield self
            except BaseException:
                self._tables = snapshot
                raise
            finally:
                self._atomic_depth = 0

    # -- principals --------------------------------------------------------------------

    def add_principal(self, principal: Principal) -> Principal:
        principal = normalize_record(principal)
        with self._lock:
            self._check_open()
            tables = self._tables
            if principal.id in tables.principals:
                raise Conflict("A principal with this id already exists.")
            if principal.name in tables.principal_names:
                raise Conflict(f"A principal named {principal.name!r} already exists.")
            tables.principals[principal.id] = principal
            tables.principal_names[principal.name] = principal.id
        return principal

    def get_principal(self, principal_id: str) -> Principal | None:
        with self._lock:
            self._check_open()
            return self._tables.principals.get(principal_id)

    def get_principal_by_name(self, name: str) -> Principal | None:
        with self._lock:
            self._check_open()
            principal_id = self._tables.principal_names.get(name)
            return None if principal_id is None else self._tables.principals[principal_id]

    def list_principals(
        self, *, kind: PrincipalKind | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[Principal]:
        with self._lock:
            self._check_open()
            records = list(self._tables.principals.values())
        return _paginate(records, lambda p: kind is None or p.kind == kind, limit, cursor)

    # -- upstream credentials ----------------------------------------------------------

    def add_credential(self, credential: UpstreamCredential) -> UpstreamCredential:
        credential = normalize_record(credential)
        with self._lock:
            self._check_open()
            tables = self._tables
            if credential.id in tables.credentials:
                raise Conflict("An upstream credential with this id already exists.")
            if credential.owner_id not in tables.principals:
                raise Conflict("The credential's owner does not exist.")
            tables.credentials[credential.id] = credential
        return credential

    def get_credential(self, credential_id: str) -> UpstreamCredential | None:
        with self._lock:
            self._check_open()
            return self._tables.credentials.get(credential_id)

    def list_credentials(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[UpstreamCredential]:
        with self._lock:
            self._check_open()
            records = list(self._tables.credentials.values())
        return _paginate(
            records, lambda c: owner_id is None or c.owner_id == owner_id, limit, cursor
        )

    def iter_credentials(self) -> Iterator[UpstreamCredential]:
        with self._lock:
            self._check_open()
            records = sorted(self._tables.credentials.values(), key=lambda c: (c.created_at, c.id))
        yield from records

    def update_credential_ciphertexts(self, ciphertexts: Mapping[str, bytes]) -> int:
        for credential_id, ciphertext in ciphertexts.items():
            if not isinstance(ciphertext, bytes):
                raise InvalidRequest(
                    f"The ciphertext for credential {credential_id!r} must be bytes."
                )
        with self._lock:
            self._check_open()
            credentials = self._tables.credentials
            updated = 0
            for credential_id, ciphertext in ciphertexts.items():
                current = credentials.get(credential_id)
                if current is not None:
                    credentials[credential_id] = dataclasses.replace(
                        current, encrypted_token=ciphertext
                    )
                    updated += 1
            return updated

    def mark_credential_verified(self, credential_id: str, verified_at: datetime) -> bool:
        verified_at = check_aware(verified_at, "verified_at")  # type: ignore[assignment]
        with self._lock:
            self._check_open()
            current = self._tables.credentials.get(credential_id)
            if current is None:
                return False
            self._tables.credentials[credential_id] = dataclasses.replace(
                current, verified_at=verified_at
            )
            return True

    def delete_credential(self, credential_id: str) -> bool:
        with self._lock:
            self._check_open()
            return self._tables.credentials.pop(credential_id, None) is not None

    # -- gateway keys ------------------------------------------------------------------

    def add_key(self, key: ApiKey) -> ApiKey:
        key = normalize_record(dataclasses.replace(key, scopes=check_scopes(key.scopes)))
        with self._lock:
            self._check_open()
            tables = self._tables
            if key.key_id in tables.keys:
                raise Conflict("A gateway key with this key id already exists.")
            if key.owner_id not in tables.principals:
                raise Conflict("The key's owner does not exist.")
            tables.keys[key.key_id] = key
        return key

    def get_key(self, key_id: str) -> ApiKey | None:
        with self._lock:
            self._check_open()
            return self._tables.keys.get(key_id)

    def list_keys(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[ApiKey]:
        with self._lock:
            self._check_open()
            records = list(self._tables.keys.values())
        return _paginate(
            records, lambda k: owner_id is None or k.owner_id == owner_id, limit, cursor
        )

    def update_key(
        self, key_id: str, changes: KeyChanges, *, expected: KeyChanges | None = None
    ) -> ApiKey | None:
        new_values = check_key_changes(changes, "changes")
        expected_values = check_key_changes(expected or {}, "expected")
        with self._lock:
            self._check_open()
            current = self._tables.keys.get(key_id)
            if current is None:
                return None
            for field_name, value in expected_values.items():
                if getattr(current, field_name) != value:
                    return current
            if not new_values:
                return current
            updated = dataclasses.replace(current, **new_values)
            self._tables.keys[key_id] = updated
            return updated

    def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
        checked = {k: check_aware(v, f"last_used[{k!r}]") for k, v in last_used.items()}
        with self._lock:
            self._check_open()
            keys = self._tables.keys
            for key_id, when in checked.items():
                current = keys.get(key_id)
                if current is None or when is None:
                    continue
                if current.last_used_at is None or current.last_used_at < when:
                    keys[key_id] = dataclasses.replace(current, last_used_at=when)

    # -- fitted models -----------------------------------------------------------------

    def add_fitted_model(self, model: FittedModel) -> FittedModel:
        model = normalize_record(model)
        with self._lock:
            self._check_open()
            if model.id in self._tables.fitted_models:
                raise Conflict("A fitted model with this id is already recorded.")
            self._tables.fitted_models[model.id] = model
        return model

    def get_fitted_model(self, model_id: str) -> FittedModel | None:
        with self._lock:
            self._check_open()
            return self._tables.fitted_models.get(model_id)

    def list_fitted_models(
        self, *, owner_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[FittedModel]:
        with self._lock:
            self._check_open()
            records = list(self._tables.fitted_models.values())
        return _paginate(
            records, lambda m: owner_id is None or m.owner_id == owner_id, limit, cursor
        )

    # -- usage -------------------------------------------------------------------------

    def record_usage(self, events: Sequence[UsageEvent]) -> None:
        normalized = [normalize_record(event) for event in events]
        with self._lock:
            self._check_open()
            usage = self._tables.usage
            ids = [event.id for event in normalized]
            if len(set(ids)) != len(ids) or any(event_id in usage for event_id in ids):
                raise Conflict("A usage event with this id is already recorded.")
            for event in normalized:
                usage[event.id] = event

    def _matching_usage(
        self,
        key_id: str | None,
        owner_id: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[list[UsageEvent], Callable[[UsageEvent], bool]]:
        since = check_aware(since, "since")
        until = check_aware(until, "until")
        with self._lock:
            self._check_open()
            records = list(self._tables.usage.values())

        def matches(event: UsageEvent) -> bool:
            return (
                (key_id is None or event.key_id == key_id)
                and (owner_id is None or event.owner_id == owner_id)
                and _within(event.created_at, since, until)
            )

        return records, matches

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
        records, matches = self._matching_usage(key_id, owner_id, since, until)
        if errors_only:
            in_window = matches

            def matches(event: UsageEvent) -> bool:
                return event.status >= 400 and in_window(event)

        return _paginate(records, matches, limit, cursor)

    def summarize_usage(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummary]:
        records, matches = self._matching_usage(key_id, owner_id, since, until)
        totals: dict[tuple[str, str], list[float]] = {}
        for event in records:
            if not matches(event):
                continue
            row = totals.setdefault((event.key_id, event.operation), [0, 0, 0, 0, 0.0, 0])
            row[0] += 1
            row[1] += 1 if event.status >= 400 else 0
            row[2] += event.rows or 0
            row[3] += event.bytes or 0
            row[4] += event.latency_ms
            row[5] += event.credits or 0
        return [
            UsageSummary(
                key_id=group[0],
                operation=group[1],
                calls=int(row[0]),
                errors=int(row[1]),
                rows=int(row[2]),
                bytes=int(row[3]),
                total_latency_ms=float(row[4]),
                credits=int(row[5]),
            )
            for group, row in sorted(totals.items())
        ]

    def usage_rollup(
        self,
        *,
        key_id: str | None = None,
        owner_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRollup]:
        records, matches = self._matching_usage(key_id, owner_id, since, until)
        rows: list[dict[str, Any]] = [_rollup_row(e) for e in records if matches(e)]
        since_day, until_day = day_bounds(since, until)
        with self._lock:
            daily = list(self._tables.usage_daily.values())
        for rollup in daily:
            if (
                (key_id is None or rollup.key_id == key_id)
                and (owner_id is None or rollup.owner_id == owner_id)
                and (since_day is None or rollup.day >= since_day)
                and (until_day is None or rollup.day < until_day)
            ):
                rows.append(dataclasses.asdict(rollup))
        return merge_rollups(rows)

    def prune(self, before: datetime) -> PruneReport:
        cutoff = check_aware(before, "before")
        assert cutoff is not None
        now = datetime.now(cutoff.tzinfo)
        with self._lock:
            self._check_open()
            tables = self._tables
            old = [e for e in tables.usage.values() if e.created_at < cutoff]
            existing = [dataclasses.asdict(r) for r in tables.usage_daily.values()]
            for rollup in merge_rollups(existing + [_rollup_row(e) for e in old]):
                group = (rollup.day, rollup.key_id, rollup.owner_id, rollup.operation)
                tables.usage_daily[group] = rollup
            for event in old:
                del tables.usage[event.id]
            audit = [a.id for a in tables.audit.values() if a.created_at < cutoff]
            for event_id in audit:
                del tables.audit[event_id]
            stale = [name for name, (_, expiry) in tables.counters.items() if expiry < now]
            for name in stale:
                del tables.counters[name]
            stale_budgets = [
                group
                for group, expiry in tables.budget_expiry.items()
                if expiry is not None and expiry < now
            ]
            for budget in stale_budgets:
                tables.budgets.pop(budget, None)
                del tables.budget_expiry[budget]
        return PruneReport(
            usage_events=len(old), audit_events=len(audit), counters=len(stale) + len(stale_budgets)
        )

    # -- governance: policies and membership ---------------------------------------------

    def put_policy(self, policy: Policy) -> Policy:
        policy = normalize_record(
            dataclasses.replace(
                policy,
                alert_thresholds=tuple(policy.alert_thresholds),
                allowed_cidrs=tuple(policy.allowed_cidrs),
            )
        )
        with self._lock:
            self._check_open()
            self._tables.policies[policy.target_id] = policy
        return policy

    def get_policy(self, target_id: str) -> Policy | None:
        with self._lock:
            self._check_open()
            return self._tables.policies.get(target_id)

    def list_policies(self, *, target_ids: Sequence[str] | None = None) -> list[Policy]:
        with self._lock:
            self._check_open()
            policies = self._tables.policies
            if target_ids is None:
                found = list(policies.values())
            else:
                found = [policies[t] for t in set(target_ids) if t in policies]
        return sorted(found, key=lambda policy: policy.target_id)

    def delete_policy(self, target_id: str) -> bool:
        with self._lock:
            self._check_open()
            return self._tables.policies.pop(target_id, None) is not None

    def add_membership(self, membership: Membership) -> Membership:
        membership = normalize_record(membership)
        group = (membership.team_id, membership.user_id)
        with self._lock:
            self._check_open()
            principals = self._tables.principals
            if (
                group in self._tables.memberships
                or membership.team_id not in principals
                or membership.user_id not in principals
            ):
                raise Conflict(
                    "This user is already a member of this team, or one of them does not exist."
                )
            self._tables.memberships[group] = membership
        return membership

    def remove_membership(self, team_id: str, user_id: str) -> bool:
        with self._lock:
            self._check_open()
            return self._tables.memberships.pop((team_id, user_id), None) is not None

    def list_memberships(
        self, *, team_id: str | None = None, user_id: str | None = None
    ) -> list[Membership]:
        with self._lock:
            self._check_open()
            found = [
                m
                for m in self._tables.memberships.values()
                if (team_id is None or m.team_id == team_id)
                and (user_id is None or m.user_id == user_id)
            ]
        return sorted(found, key=lambda m: (m.team_id, m.user_id))

    # -- governance: counters ------------------------------------------------------------

    def _budget(self, subject_id: str, bucket: str) -> BudgetCounter:
        return self._tables.budgets.get(
            (subject_id, bucket), BudgetCounter(subject_id=subject_id, bucket=bucket)
        )

    def reserve_budget(self, claims: Sequence[BudgetClaim]) -> int | None:
        claims = [check_claim(claim) for claim in claims]
        with self._lock:
            self._check_open()
            pending: dict[tuple[str, str], BudgetCounter] = {}

            def current(subject_id: str, bucket: str) -> BudgetCounter:
                return pending.get((subject_id, bucket)) or self._budget(subject_id, bucket)

            for index, claim in enumerate(claims):
                counter = current(claim.subject_id, claim.bucket)
                if claim.limit is not None:
                    held = counter.spent + counter.reserved + claim.amount
                    for bucket in claim.window:
                        earlier = current(claim.subject_id, bucket)
                        held += earlier.spent + earlier.reserved
                    if held > claim.limit:
                        return index
                pending[(claim.subject_id, claim.bucket)] = dataclasses.replace(
                    counter, reserved=counter.reserved + claim.amount
                )
            self._tables.budgets.update(pending)
            for claim in claims:
                group = (claim.subject_id, claim.bucket)
                self._tables.budget_expiry.setdefault(group, claim.expires_at)
        return None

    def settle_budget(self, claims: Sequence[BudgetClaim], spent: int) -> list[BudgetCounter]:
        claims = [check_claim(claim) for claim in claims]
        spent = check_amount(spent, "spent")
        counters: list[BudgetCounter] = []
        with self._lock:
            self._check_open()
            for claim in claims:
                counter = self._budget(claim.subject_id, claim.bucket)
                counter = dataclasses.replace(
                    counter,
                    reserved=max(0, counter.reserved - claim.amount),
                    spent=counter.spent + spent,
                )
                group = (claim.subject_id, claim.bucket)
                self._tables.budgets[group] = counter
                self._tables.budget_expiry.setdefault(group, claim.expires_at)
                counters.append(counter)
        return counters

    def get_budget_counters(self, subject_id: str, buckets: Sequence[str]) -> list[BudgetCounter]:
        with self._lock:
            self._check_open()
            return [self._budget(subject_id, bucket) for bucket in buckets]

    def mark_budget_alert(self, subject_id: str, bucket: str, threshold: int) -> bool:
        with self._lock:
            self._check_open()
            group = (subject_id, bucket)
            counter = self._tables.budgets.get(group)
            if counter is None or counter.alerted >= threshold:
                return False
            self._tables.budgets[group] = dataclasses.replace(counter, alerted=threshold)
            return True

    def hit_counters(self, hits: Sequence[CounterHit]) -> tuple[int | None, list[int]]:
        with self._lock:
            self._check_open()
            counters = self._tables.counters
            pending: dict[str, tuple[int, datetime]] = {}
            for index, hit in enumerate(hits):
                amount = check_amount(hit.amount, "amount")
                expires_at = check_aware(hit.expires_at, "expires_at")
                assert expires_at is not None
                count, expiry = pending.get(hit.name) or counters.get(hit.name, (0, expires_at))
                if count + amount > hit.limit:
                    return index, [counters.get(h.name, (0, expires_at))[0] for h in hits]
                pending[hit.name] = (count + amount, expiry)
            counters.update(pending)
            return None, [counters[hit.name][0] for hit in hits]

    def release_counters(self, amounts: Mapping[str, int]) -> None:
        with self._lock:
            self._check_open()
            counters = self._tables.counters
            for name, amount in amounts.items():
                amount = check_amount(amount, "amount")
                if name in counters:
                    count, expiry = counters[name]
                    counters[name] = (max(0, count - amount), expiry)

    # -- audit -------------------------------------------------------------------------

    def record_audit(self, event: AuditEvent) -> None:
        # A private copy of details: the caller mutating its dict must not rewrite history.
        event = normalize_record(dataclasses.replace(event, details=check_json(event.details)))
        with self._lock:
            self._check_open()
            if event.id in self._tables.audit:
                raise Conflict("An audit event with this id is already recorded.")
            self._tables.audit[event.id] = event

    def list_audit(
        self,
        *,
        target_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        with self._lock:
            self._check_open()
            records = list(self._tables.audit.values())

        def matches(event: AuditEvent) -> bool:
            return (
                (target_id is None or event.target_id == target_id)
                and (actor is None or event.actor == actor)
                and (action is None or event.action == action)
            )

        return _paginate(records, matches, limit, cursor)

    # -- deployment state --------------------------------------------------------------

    def claim_state(self, name: str, value: str) -> str:
        with self._lock:
            self._check_open()
            return self._tables.state.setdefault(name, value)

    def get_state(self, name: str) -> str | None:
        with self._lock:
            self._check_open()
            return self._tables.state.get(name)

    def put_state(self, name: str, value: str) -> None:
        with self._lock:
            self._check_open()
            self._tables.state[name] = value

    def bump_counter(self, name: str) -> int:
        with self._lock:
            self._check_open()
            value = self._tables.state_counters.get(name, 0) + 1
            self._tables.state_counters[name] = value
            return value

    def read_counter(self, name: str) -> int:
        with self._lock:
            self._check_open()
            return self._tables.state_counters.get(name, 0)

    # -- upload ids --------------------------------------------------------------------

    def add_upload_owner(self, upload_id: str, owner_id: str, kind: str) -> None:
        with self._lock:
            self._check_open()
            self._tables.upload_owners.setdefault((upload_id, owner_id), kind)

    def is_upload_owner(self, upload_id: str, owner_id: str) -> bool:
        with self._lock:
            self._check_open()
            return (upload_id, owner_id) in self._tables.upload_owners

    # -- admin console sessions --------------------------------------------------------

    def add_admin_session(self, session: AdminSession) -> AdminSession:
        session = normalize_record(session)
        with self._lock:
            self._check_open()
            if session.id in self._tables.admin_sessions:
                raise Conflict("An admin session with this id already exists.")
            self._tables.admin_sessions[session.id] = session
        return session

    def get_admin_session(self, session_id: str) -> AdminSession | None:
        with self._lock:
            self._check_open()
            return self._tables.admin_sessions.get(session_id)

    def touch_admin_session(self, session_id: str, last_seen_at: datetime) -> bool:
        when = check_aware(last_seen_at, "last_seen_at")
        with self._lock:
            self._check_open()
            current = self._tables.admin_sessions.get(session_id)
            if current is None:
                return False
            if when is not None and when > current.last_seen_at:
                self._tables.admin_sessions[session_id] = dataclasses.replace(
                    current, last_seen_at=when
                )
            return True

    def delete_admin_sessions(
        self,
        *,
        session_id: str | None = None,
        key_id: str | None = None,
        expires_before: datetime | None = None,
    ) -> int:
        check_session_filters(session_id, key_id, expires_before)
        before = check_aware(expires_before, "expires_before")
        with self._lock:
            self._check_open()
            doomed = [
                s.id
                for s in self._tables.admin_sessions.values()
                if (session_id is None or s.id == session_id)
                and (key_id is None or s.key_id == key_id)
                and (before is None or s.expires_at < before)
            ]
            for doomed_id in doomed:
                del self._tables.admin_sessions[doomed_id]
            return len(doomed)


def _rollup_row(event: UsageEvent) -> dict[str, Any]:
    return {
        "day": event.created_at.date(),
        "key_id": event.key_id,
        "owner_id": event.owner_id,
        "operation": event.operation,
        "calls": 1,
        "errors": 1 if event.status >= 400 else 0,
        "rows": event.rows or 0,
        "bytes": event.bytes or 0,
        "credits": event.credits or 0,
    }
