"""The policy engine: may this key spend this now? Allowlist, rate limits, fits in flight and
budgets (in credits, cells or calls), decided in that order; then settle or refund what was
reserved."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tabpfn_gateway.errors import (
    BudgetExhausted,
    ConcurrencyLimited,
    IpNotAllowed,
    PolicyRefused,
    RateLimited,
    StoreUnavailable,
)
from tabpfn_gateway.governance._alerts import AlertDispatcher, BudgetAlert
from tabpfn_gateway.governance._ledger import BudgetLedger, StoreLedger
from tabpfn_gateway.governance._limiter import (
    InProcessLimiter,
    RateCheck,
    RateDecision,
    RateLimiter,
    StoreLimiter,
)
from tabpfn_gateway.governance._periods import budget_span
from tabpfn_gateway.governance._policy import (
    EffectivePolicy,
    PolicySource,
    address_allowed,
    effective_policy,
)
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import ApiKey, BudgetClaim, Policy, utcnow

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings

__all__ = ["Admission", "BudgetStatus", "BudgetUsage", "PolicyEngine"]

logger = logging.getLogger(__name__)

#: Operations that spend from budgets (reserved before, settled after): cloud and hosted
#: predictions.
PRICED_OPERATIONS = frozenset({"predict", "hosted_predict"})
#: Of those, the ones that cost TabPFN credits (a self-hosted container has none).
CREDIT_OPERATIONS = frozenset({"predict"})
#: Operations that hold a fit slot while they run.
FIT_OPERATIONS = frozenset({"fit", "submit_fit_job"})
#: Operations that do not count as requests: an upload rides on the prepare call that
#: handed out its URL (which was counted).
RATE_EXEMPT = frozenset({"upload"})

_PERIOD_SECONDS = {"day": 86_400, "month": 30 * 86_400}


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget that applies to a key, as it stands now."""

    level: str
    name: str
    budget: int
    period: str
    window: str
    mode: str
    spent: int
    reserved: int
    resets_at: datetime
    unit: str = "credits"

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.spent - self.reserved)


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """How much of one budget is spent this period: ``level`` is ``key``, ``user`` or
    ``team``, ``target_id`` the key id or principal id the budget is set on."""

    level: str
    target_id: str
    budget: int
    spent: int

    @property
    def ratio(self) -> float:
        """Settled spend over the budget (1.0 is all of it; above 1.0 is an overshoot)."""
        return self.spent / self.budget if self.budget > 0 else 0.0


def counts(policy: Policy, operation: str) -> bool:
    """Whether ``policy``'s budget counts ``operation``: a credit budget counts the calls
    that cost credits; a cell or call budget counts every prediction, cloud or hosted."""
    if policy.budget_credits is None or operation not in PRICED_OPERATIONS:
        return False
    return policy.budget_unit != "credits" or operation in CREDIT_OPERATIONS


def budget_subject(policy: Policy) -> str:
    """The counters' subject of ``policy``'s budget: each unit counts on counters of its own,
    so a budget whose unit changes starts from zero rather than mixing credits and cells."""
    if policy.budget_unit == "credits":
        return policy.target_id
    return f"{policy.target_id}#{policy.budget_unit}"


@dataclass
class Admission:
    """A call the policy let through. ``settle(credits, cells)`` after it succeeded,
    ``refund()`` after it failed: exactly one of them, once (later calls do nothing).
    ``headers`` are the IETF RateLimit fields for the answer. ``claims`` are the budget
    reservations, ``claim_sources`` and ``units`` say whose and in what unit each is;
    ``late`` are cell budgets still to reserve with ``reserve_cells`` (admitted with
    ``defer_cells``: the call's size is known only once its body has streamed)."""

    engine: PolicyEngine | None = None
    claims: tuple[BudgetClaim, ...] = ()
    sources: tuple[PolicySource, ...] = ()
    slots: tuple[str, ...] = ()
    estimate: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    claim_sources: tuple[PolicySource, ...] = ()
    units: tuple[str, ...] = ()
    cells: int = 0
    late: tuple[PolicySource, ...] = ()
    operation: str = ""
    _done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def wants_cells(self) -> bool:
        """Whether cell budgets wait for ``reserve_cells`` before the call may complete."""
        return bool(self.late)

    def reserve_cells(self, cells: int | None) -> None:
        """Reserve the deferred cell budgets for a call of ``cells`` rows x columns (None:
        unknown: it holds all that is left); ``BudgetExhausted`` if one has too little
        left (what was reserved stays held until ``refund``). Blocking (a database write)."""
        late, self.late = self.late, ()
        if not late or self.engine is None:
            return
        try:
            claims, sources, units = self.engine._reserve_sources(late, self.operation, None, cells)
        except PolicyRefused as refusal:
            self.engine._refused(refusal)
            raise
        self.claims += claims
        self.claim_sources += sources
        self.units += units
        self.cells = max(0, cells or 0)

    @property
    def priced(self) -> bool:
        """Whether a budget applies (the caller should price the call)."""
        return bool(self.claims)

    def _finish(self) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    @property
    def needs_io(self) -> bool:
        """Whether settling or refunding writes somewhere (a budget, a shared fit slot)."""
        if self.engine is None:
            return False
        return bool(self.claims) or (bool(self.slots) and not self.engine.limiter.in_process)

    def settle(self, credits: int | None, cells: int | None = None) -> None:
        """Turn the reservations into what was spent: ``credits`` on credit budgets, ``cells``
        on cell budgets (None: the estimates), one call on call budgets; free the slot."""
        if not self._finish() or self.engine is None:
            return
        spent = {
            "credits": self.estimate if credits is None else max(0, int(credits)),
            "cells": self.cells if cells is None else max(0, int(cells)),
            "calls": 1,
        }
        self.engine._settle(self, spent)

    def refund(self) -> None:
        """Give back what was reserved and the slot: the call failed."""
        if not self._finish() or self.engine is None:
            return
        self.engine._settle(self, {})


class _FallbackLimiter:
    """Redis first; when Redis cannot be reached, the database's counters (logged once)."""

    in_process = False

    def __init__(self, primary: RateLimiter, secondary: RateLimiter) -> None:
        self._primary = primary
        self._secondary = secondary
        self._warned = False

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("Redis is unreachable: rate limits fall back to the database")

    def hit(self, checks: Sequence[RateCheck]) -> RateDecision:
        try:
            return self._primary.hit(checks)
        except StoreUnavailable:
            self._warn()
            return self._secondary.hit(checks)

    def try_hit(self, checks: Sequence[RateCheck]) -> RateDecision | None:
        return self._primary.try_hit(checks)

    def acquire(self, name: str, cap: int) -> bool:
        try:
            return self._primary.acquire(name, cap)
        except StoreUnavailable:
            self._warn()
            return self._secondary.acquire(name, cap)

    def release(self, name: str) -> None:
        self._primary.release(name)
        self._secondary.release(name)

    def close(self) -> None:
        self._primary.close()
        self._secondary.close()


#: A reservation made: its claims, the policy each came from, and each one's unit.
_Reserved = tuple[tuple[BudgetClaim, ...], tuple[PolicySource, ...], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _ClaimPlan:
    """The budget claims of one call, before the ledger is asked: each claim's source, when
    its period resets and the call's size in its unit (None: unknown)."""

    claims: tuple[BudgetClaim, ...]
    sources: tuple[tuple[PolicySource, datetime, int | None], ...]
    now: datetime

    def refused_at_once(self) -> int | None:
        """The first claim refused without asking the ledger (nothing left to hold)."""
        return next(
            (i for i, c in enumerate(self.claims) if c.limit is not None and c.limit < 0), None
        )


@dataclass(frozen=True, slots=True)
class _Cached:
    effective: EffectivePolicy
    until: float


class PolicyEngine:
    """Decides and accounts, per call, for the policies that apply to a key.

    The policies of a key (its own, its owner's, the owner's teams') are cached for
    ``cache_ttl`` seconds and dropped by ``invalidate``; a key with no policy costs one
    dictionary lookup. Refusals raise ``PolicyRefused`` subclasses with ``retry_after`` and
    ``details`` for the RateLimit headers.
    """

    def __init__(
        self,
        store: Store,
        *,
        limiter: RateLimiter | None = None,
        ledger: BudgetLedger | None = None,
        alerts: AlertDispatcher | None = None,
        cache_ttl: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.limiter: RateLimiter = limiter if limiter is not None else InProcessLimiter()
        self.ledger: BudgetLedger = ledger if ledger is not None else StoreLedger(store)
        self.alerts = alerts if alerts is not None else AlertDispatcher(store)
        self._ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._cache_lock = threading.Lock()
        self._refusal_listeners: list[Callable[[PolicyRefused], None]] = []
        self._kinds: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PolicyEngine(limiter={type(self.limiter).__name__})"

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, *, webhook_transport: object | None = None
    ) -> PolicyEngine:
        """An engine with the backends the settings choose (see docs/governance.md)."""
        from tabpfn_gateway.governance._alerts import WebhookSender
        from tabpfn_gateway.governance._ledger import RedisLedger
        from tabpfn_gateway.governance._limiter import RedisLimiter

        backend = settings.rate_limit_backend
        if backend == "auto":
            if settings.redis_url:
                backend = "redis"
            elif settings.database_url.startswith("memory://"):
                backend = "memory"
            else:
                backend = "database"
        limiter: RateLimiter
        if backend == "redis":
            if not settings.redis_url:
                from tabpfn_gateway.errors import ConfigurationError

                raise ConfigurationError(
                    "TABPFN_GATEWAY_RATE_LIMIT_BACKEND=redis needs TABPFN_GATEWAY_REDIS_URL."
                )
            limiter = RedisLimiter(settings.redis_url)
            if settings.redis_failure == "fall_back":
                limiter = _FallbackLimiter(limiter, StoreLimiter(store))
        elif backend == "database":
            limiter = StoreLimiter(store)
        else:
            limiter = InProcessLimiter()
        ledger: BudgetLedger = StoreLedger(store)
        if settings.budget_backend == "redis":
            if not settings.redis_url:
                from tabpfn_gateway.errors import ConfigurationError

                raise ConfigurationError(
                    "TABPFN_GATEWAY_BUDGET_BACKEND=redis needs TABPFN_GATEWAY_REDIS_URL."
                )
            ledger = RedisLedger(settings.redis_url)
        webhook = None
        if settings.budget_webhook_url:
            secret = settings.budget_webhook_secret
            webhook = WebhookSender(
                settings.budget_webhook_url,
                (secret.get_secret_value() if secret is not None else "").encode(),
                attempts=settings.budget_webhook_attempts,
                backoff=settings.budget_webhook_backoff_seconds,
                transport=webhook_transport,  # type: ignore[arg-type]
            )
        return cls(
            store,
            limiter=limiter,
            ledger=ledger,
            alerts=AlertDispatcher(store, webhook),
            cache_ttl=settings.key_cache_ttl_seconds,
        )

    def add_refusal_listener(self, listener: Callable[[PolicyRefused], None]) -> None:
        """Call ``listener`` with every refusal (the server's refusal metric)."""
        self._refusal_listeners.append(listener)

    # -- which policies apply ------------------------------------------------------------

    def cached(self, key_id: str) -> EffectivePolicy | None:
        """The policies of a key if cached and fresh (no I/O), else None."""
        entry = self._cache.get(key_id)
        if entry is None or time.monotonic() >= entry.until:
            return None
        return entry.effective

    def applicable(self, key: ApiKey) -> EffectivePolicy:
        """The policies that apply to ``key`` (two small queries when not cached)."""
        cached = self.cached(key.key_id)
        if cached is not None:
            return cached
        teams = [m.team_id for m in self.store.list_memberships(user_id=key.owner_id)]
        policies = {
            p.target_id: p
            for p in self.store.list_policies(target_ids=[key.key_id, key.owner_id, *teams])
        }
        sources: list[PolicySource] = []
        if key.key_id in policies:
            sources.append(PolicySource("key", key.key_id, policies[key.key_id]))
        if key.owner_id in policies:
            sources.append(PolicySource("owner", key.owner_id, policies[key.owner_id]))
        for team_id in teams:
            if team_id in policies:
                sources.append(PolicySource("team", team_id, policies[team_id]))
        effective = effective_policy(key.key_id, sources)
        if self._ttl > 0:
            with self._cache_lock:
                if len(self._cache) > 50_000:
                    self._cache.clear()
                self._cache[key.key_id] = _Cached(effective, time.monotonic() + self._ttl)
        return effective

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached policies (of one key, or all: a principal's or team's change)."""
        with self._cache_lock:
            if key_id is None:
                self._cache.clear()
            else:
                self._cache.pop(key_id, None)

    def decides_in_memory(self, effective: EffectivePolicy, operation: str) -> bool:
        """Whether ``admit`` for this would do no I/O (no budget to reserve, and no shared
        counter to count in)."""
        if effective.empty:
            return True
        policies = [s.policy for s in effective.sources]
        if any(counts(p, operation) for p in policies):
            return False
        if self.limiter.in_process:
            return True
        rates = operation not in RATE_EXEMPT and any(
            p.requests_per_minute is not None or p.requests_per_hour is not None for p in policies
        )
        slots = operation in FIT_OPERATIONS and any(
            p.max_concurrent_fits is not None for p in policies
        )
        return not (rates or slots)

    def wants_price(self, effective: EffectivePolicy, operation: str) -> bool:
        """Whether a credit budget applies to this call, so its credits should be quoted first."""
        return any(
            s.policy.budget_unit == "credits" and counts(s.policy, operation)
            for s in effective.sources
        )

    def counts_cells(self, effective: EffectivePolicy, operation: str) -> bool:
        """Whether a cell budget applies to this call (its rows x columns are reserved)."""
        return any(
            s.policy.budget_unit == "cells" and counts(s.policy, operation)
            for s in effective.sources
        )

    # -- the decision ----------------------------------------------------------------------

    def admit(
        self,
        key: ApiKey,
        operation: str,
        *,
        client_address: str | None = None,
        credits: int | None = None,
        cells: int | None = None,
        defer_cells: bool = False,
        effective: EffectivePolicy | None = None,
    ) -> Admission:
        """Let the call through (an ``Admission`` to settle or refund) or raise a refusal.

        ``credits`` is the call's estimated price and ``cells`` its rows x columns (None:
        unknown; the call then holds all that is left of each hard budget in that unit until
        it is settled or refunded). With ``defer_cells``, cell budgets are left for
        ``Admission.reserve_cells`` (the size is not known yet). Order: allowlist (403),
        rate limits, fit slots, budgets (429).
        """
        if effective is None:
            effective = self.applicable(key)
        if effective.empty:
            return Admission()
        try:
            return self._admit(
                key, operation, client_address, credits, cells, defer_cells, effective
            )
        except PolicyRefused as refusal:
            self._refused(refusal)
            raise

    def admit_in_memory(
        self,
        key: ApiKey,
        operation: str,
        *,
        client_address: str | None = None,
        credits: int | None = None,
    ) -> Admission | None:
        """``admit`` when it can be decided with no I/O: the key's policies are cached, no
        budget is reserved and no shared fit slot taken for this call, and the limiter counts
        the rate limits in memory (or from its lease). Else None, with nothing counted: call
        ``admit`` (off the event loop)."""
        effective = self.cached(key.key_id)
        if effective is None:
            return None
        if effective.empty:
            return Admission()
        policies = [s.policy for s in effective.sources]
        if any(counts(p, operation) for p in policies):
            return None
        if (
            operation in FIT_OPERATIONS
            and not self.limiter.in_process
            and any(p.max_concurrent_fits is not None for p in policies)
        ):
            return None
        try:
            if not address_allowed(client_address, effective.allowed_cidrs):
                raise IpNotAllowed()
            headers: dict[str, str] = {}
            if operation not in RATE_EXEMPT:
                checks, labels = self._rate_checks(effective)
                if checks:
                    decision = self.limiter.try_hit(checks)
                    if decision is None:
                        return None
                    headers = self._rate_headers(checks, labels, decision)
            slots = self._take_slots(effective, operation)
        except PolicyRefused as refusal:
            self._refused(refusal)
            raise
        return Admission(
            engine=self,
            sources=effective.sources,
            slots=slots,
            estimate=max(0, credits or 0),
            headers=headers,
        )

    def _refused(self, refusal: PolicyRefused) -> None:
        for listener in self._refusal_listeners:
            try:
                listener(refusal)
            except Exception:
                logger.exception("A refusal listener failed")

    def _admit(
        self,
        key: ApiKey,
        operation: str,
        client_address: str | None,
        credits: int | None,
        cells: int | None,
        defer_cells: bool,
        effective: EffectivePolicy,
    ) -> Admission:
        if not address_allowed(client_address, effective.allowed_cidrs):
            raise IpNotAllowed()
        budgeted = [s for s in effective.sources if counts(s.policy, operation)]
        late = tuple(s for s in budgeted if defer_cells and s.policy.budget_unit == "cells")
        reservable = [s for s in budgeted if s not in late]
        slots: tuple[str, ...] = ()
        together = self._admit_in_one_call(effective, operation, reservable, credits, cells)
        if together is not None:
            headers, reserved = together
        else:
            headers = {} if operation in RATE_EXEMPT else self._check_rates(effective)
            slots = self._take_slots(effective, operation)
            try:
                reserved = self._reserve_sources(reservable, operation, credits, cells)
            except BaseException:
                for name in slots:
                    self.limiter.release(name)
                raise
        claims, claim_sources, units = reserved
        return Admission(
            engine=self,
            claims=claims,
            sources=effective.sources,
            slots=slots,
            estimate=max(0, credits or 0),
            headers=headers,
            claim_sources=claim_sources,
            units=units,
            cells=max(0, cells or 0),
            late=late,
            operation=operation,
        )

    def _admit_in_one_call(
        self,
        effective: EffectivePolicy,
        operation: str,
        budgeted: Sequence[PolicySource],
        credits: int | None,
        cells: int | None,
    ) -> tuple[dict[str, str], _Reserved] | None:
        """Rate limits and budgets decided in one round trip, when the ledger can do both
        (``RedisLedger.hit_and_reserve`` with a Redis limiter) and no fit slot is taken in
        between; the same outcome as the two calls. None: make them one after the other."""
        # Asked before the claims are built: a ledger that cannot decide for this limiter
        # would have them built twice (and an unknown size's counters read twice).
        combines_with = getattr(self.ledger, "combines_with", None)
        hit_and_reserve = getattr(self.ledger, "hit_and_reserve", None)
        if combines_with is None or hit_and_reserve is None or not combines_with(self.limiter):
            return None
        if operation in RATE_EXEMPT or not budgeted:
            return None
        if operation in FIT_OPERATIONS and any(
            s.policy.max_concurrent_fits is not None for s in effective.sources
        ):
            return None
        checks, labels = self._rate_checks(effective)
        if not checks:
            return None
        plan = self._claims_for(budgeted, credits, cells)
        if not plan.claims or plan.refused_at_once() is not None:
            return None
        answer = hit_and_reserve(self.limiter, checks, plan.claims)
        if answer is None:
            return None
        decision, refused = answer
        # A rate-limit refusal reserved nothing; a budget refusal left the request counted,
        # as the rate limits count it before the reservation when the two calls are made.
        headers = self._rate_headers(checks, labels, decision)
        return headers, self._reserved(plan, refused)

    def _rate_checks(self, effective: EffectivePolicy) -> tuple[list[RateCheck], dict[str, str]]:
        checks: list[RateCheck] = []
        labels: dict[str, str] = {}
        for source in effective.sources:
            policy = source.policy
            for limit, window, seconds in (
                (policy.requests_per_minute, "minute", 60),
                (policy.requests_per_hour, "hour", 3600),
            ):
                if limit is None:
                    continue
                name = f"{source.level}:{source.policy.target_id}:{window}"
                labels[name] = f"{source.level}-{window}"
                checks.append(RateCheck(name, limit, seconds))
        return checks, labels

    def _check_rates(self, effective: EffectivePolicy) -> dict[str, str]:
        checks, labels = self._rate_checks(effective)
        if not checks:
            return {}
        return self._rate_headers(checks, labels, self.limiter.hit(checks))

    def _rate_headers(
        self, checks: list[RateCheck], labels: dict[str, str], decision: RateDecision
    ) -> dict[str, str]:
        """The RateLimit headers of a decision, or the refusal it is."""
        if decision.refused is not None:
            check = decision.refused
            wait = decision.reset_seconds.get(check.name, check.window_seconds)
            raise RateLimited(
                f"Rate limit reached: {check.limit} requests per {check.window_seconds} s "
                f"({labels[check.name]}); retry in {wait} s.",
                retry_after=wait,
                details={
                    "policy": labels[check.name],
                    "limit": check.limit,
                    "remaining": 0,
                    "window_seconds": check.window_seconds,
                    "reset_seconds": wait,
                },
            )
        # The headers name the check closest to refusing.
        tightest = min(checks, key=lambda c: decision.remaining.get(c.name, c.limit))
        return rate_limit_headers(
            labels[tightest.name],
            tightest.limit,
            tightest.window_seconds,
            decision.remaining.get(tightest.name, tightest.limit),
            decision.reset_seconds.get(tightest.name, tightest.window_seconds),
        )

    def _take_slots(self, effective: EffectivePolicy, operation: str) -> tuple[str, ...]:
        if operation not in FIT_OPERATIONS:
            return ()
        taken: list[str] = []
        for source in effective.sources:
            cap = source.policy.max_concurrent_fits
            if cap is None:
                continue
            name = f"fits:{source.policy.target_id}"
            if not self.limiter.acquire(name, cap):
                for other in taken:
                    self.limiter.release(other)
                raise ConcurrencyLimited(
                    f"At most {cap} fits may run at once ({source.level}); retry when one ends.",
                    retry_after=5,
                    details={"policy": f"{source.level}-fits", "limit": cap, "remaining": 0},
                )
            taken.append(name)
        return tuple(taken)

    def _reserve_sources(
        self,
        sources: Sequence[PolicySource],
        operation: str,
        credits: int | None,
        cells: int | None,
    ) -> _Reserved:
        """Reserve the budgets of ``sources`` for one call, all or none (one ledger write);
        ``BudgetExhausted`` naming the first that has too little left."""
        plan = self._claims_for(sources, credits, cells)
        if not plan.claims:
            return (), (), ()
        refused = plan.refused_at_once()
        if refused is None:
            refused = self.ledger.reserve(plan.claims)
        return self._reserved(plan, refused)

    def _claims_for(
        self, sources: Sequence[PolicySource], credits: int | None, cells: int | None
    ) -> _ClaimPlan:
        """The ledger claims of ``sources`` for one call (a budget whose call has no known
        size holds what is left: one ledger read)."""
        now = self._clock()
        claims: list[BudgetClaim] = []
        claim_sources: list[tuple[PolicySource, datetime, int | None]] = []
        for source in sources:
            policy = source.policy
            if policy.budget_credits is None:
                continue
            unit = policy.budget_unit
            known = credits if unit == "credits" else cells if unit == "cells" else 1
            span = budget_span(policy.budget_period, policy.budget_window, now)
            hard = policy.budget_mode == "hard"
            amount = max(0, known or 0)
            limit: int | None = policy.budget_credits if hard else None
            if hard and known is None:
                # Size unknown: hold all that is left while the call runs, so that calls in
                # flight together cannot overshoot (each would otherwise reserve nothing).
                # The reservation is still conditional: it fails if another call took some
                # of it since the read, and the call is settled at its final figure.
                counters = self.ledger.counters(budget_subject(policy), [span.bucket, *span.window])
                left = policy.budget_credits - sum(c.spent + c.reserved for c in counters)
                amount = max(0, left)
                if left <= 0:
                    limit = -1
            claims.append(
                BudgetClaim(
                    subject_id=budget_subject(policy),
                    bucket=span.bucket,
                    amount=amount,
                    limit=limit if limit is None or limit >= 0 else -1,
                    window=span.window,
                    # Kept a day past its last use, so the usage summary can still show it.
                    expires_at=span.expires_at + timedelta(days=1),
                )
            )
            claim_sources.append((source, span.resets_at, known))
        return _ClaimPlan(tuple(claims), tuple(claim_sources), now)

    def _reserved(self, plan: _ClaimPlan, refused_index: int | None) -> _Reserved:
        """The reservation of ``plan`` the ledger made, or the ``BudgetExhausted`` it is."""
        claims, now = plan.claims, plan.now
        if refused_index is not None:
            source, resets_at, known = plan.sources[refused_index]
            policy = source.policy
            unit = policy.budget_unit
            budget = policy.budget_credits or 0
            wait = max(1, int((resets_at - now).total_seconds()))
            refusal = BudgetExhausted(
                f"The {policy.budget_period}ly {unit[:-1]} budget ({budget} {unit}, "
                f"{source.level}) has too little left for this call"
                + (f" ({known} {unit})." if known is not None else "."),
                retry_after=wait,
                details={
                    "policy": f"{source.level}-budget",
                    "limit": budget,
                    "remaining": self._remaining(claims[refused_index], budget),
                    "window_seconds": _PERIOD_SECONDS[policy.budget_period],
                    "reset_seconds": wait,
                    "unit": unit,
                },
            )
            raise refusal
        return (
            claims,
            tuple(source for source, _, _ in plan.sources),
            tuple(source.policy.budget_unit for source, _, _ in plan.sources),
        )

    def _remaining(self, claim: BudgetClaim, budget: int) -> int:
        try:
            counters = self.ledger.counters(claim.subject_id, [claim.bucket, *claim.window])
        except StoreUnavailable:
            return 0
        held = sum(c.spent + c.reserved for c in counters)
        return max(0, budget - held)

    # -- accounting ------------------------------------------------------------------------

    def _settle(self, admission: Admission, spent: dict[str, int]) -> None:
        """Settle each unit's claims with what was spent in it (``{}``: a refund)."""
        for name in admission.slots:
            try:
                self.limiter.release(name)
            except Exception:
                logger.exception("Could not release a fit slot")
        for unit in dict.fromkeys(admission.units):
            picked = [i for i, u in enumerate(admission.units) if u == unit]
            claims = [admission.claims[i] for i in picked]
            amount = spent.get(unit, 0)
            counters = self.ledger.settle(claims, amount)
            if amount <= 0:
                continue
            sources = [admission.claim_sources[i] for i in picked]
            for source, claim, counter in zip(sources, claims, counters, strict=False):
                self._maybe_alert(source, claim, counter.spent)

    def _maybe_alert(self, source: PolicySource, claim: BudgetClaim, bucket_spent: int) -> None:
        policy = source.policy
        budget = policy.budget_credits
        if not budget or not policy.alert_thresholds:
            return
        spent = bucket_spent
        if claim.window:
            spent = sum(c.spent for c in self.ledger.counters(claim.subject_id, claim.window))
            spent += bucket_spent
        crossed = [t for t in policy.alert_thresholds if spent * 100 >= t * budget]
        if not crossed:
            return
        highest = max(crossed)
        # One conditional write decides which replica raises it: exactly one alert each.
        if not self.ledger.mark_alert(claim.subject_id, claim.bucket, highest):
            return
        self.alerts.fire(
            BudgetAlert(
                subject_id=policy.target_id,
                subject_level=source.level,
                subject_name=source.name,
                bucket=claim.bucket,
                threshold=highest,
                spent=spent,
                budget=budget,
                mode=policy.budget_mode,
                at=self._clock(),
                unit=policy.budget_unit,
            )
        )

    def budget_status(self, key: ApiKey) -> list[BudgetStatus]:
        """Every budget that applies to ``key``, with what is spent and left this period."""
        effective = self.applicable(key)
        now = self._clock()
        found: list[BudgetStatus] = []
        for source in effective.sources:
            policy = source.policy
            if policy.budget_credits is None:
                continue
            span = budget_span(policy.budget_period, policy.budget_window, now)
            counters = self.ledger.counters(budget_subject(policy), [span.bucket, *span.window])
            found.append(
                BudgetStatus(
                    level=source.level,
                    name=source.name,
                    budget=policy.budget_credits,
                    period=policy.budget_period,
                    window=policy.budget_window,
                    mode=policy.budget_mode,
                    spent=sum(c.spent for c in counters),
                    reserved=sum(c.reserved for c in counters),
                    resets_at=span.resets_at,
                    unit=policy.budget_unit,
                )
            )
        return found

    def budget_usage(self, max_budgets: int = 100) -> list[BudgetUsage]:
        """Every budget set on a key or principal, with what is spent this period; the
        ``max_budgets`` most used ones, most used first (a bounded set for the metrics)."""
        now = self._clock()
        found: list[BudgetUsage] = []
        for policy in self.store.list_policies():
            if policy.budget_credits is None:
                continue
            span = budget_span(policy.budget_period, policy.budget_window, now)
            counters = self.ledger.counters(budget_subject(policy), [span.bucket, *span.window])
            found.append(
                BudgetUsage(
                    level=self._level_of(policy.target_id, policy.target_type),
                    target_id=policy.target_id,
                    budget=policy.budget_credits,
                    spent=sum(c.spent for c in counters),
                )
            )
        found.sort(key=lambda usage: (-usage.ratio, usage.target_id))
        return found[: max(0, max_budgets)]

    def _level_of(self, target_id: str, target_type: str) -> str:
        if target_type == "key":
            return "key"
        kind = self._kinds.get(target_id)
        if kind is None:
            principal = self.store.get_principal(target_id)
            kind = principal.kind if principal is not None else "user"
            if len(self._kinds) > 10_000:
                self._kinds.clear()
            self._kinds[target_id] = kind  # a principal's kind never changes
        return kind

    def close(self) -> None:
        self.alerts.close()
        self.limiter.close()
        self.ledger.close()


def rate_limit_headers(
    policy: str, limit: int, window: int, remaining: int, reset: int, unit: str | None = None
) -> dict[str, str]:
    """The IETF ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-
    headers: structured-field lists, ``q`` quota, ``w`` window, ``r`` remaining, ``t``
    seconds until the quota resets)."""
    quota = f'"{policy}";q={int(limit)};w={int(window)}'
    if unit:
        quota += f';qu="{unit}"'
    return {
        "RateLimit-Policy": quota,
        "RateLimit": f'"{policy}";r={max(0, int(remaining))};t={max(0, int(reset))}',
    }
