"""Governance administration: policies, team membership, usage reports and retention, each
change audited. ``tabpfn_gateway.admin.Admin`` exposes these as its own methods."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from tabpfn_gateway.errors import Conflict, InvalidRequest, KeyNotFound, NotFound
from tabpfn_gateway.governance._engine import BudgetStatus, PolicyEngine
from tabpfn_gateway.governance._policy import EffectivePolicy, build_policy
from tabpfn_gateway.governance._reports import (
    ReportDimension,
    UsageReport,
    build_usage_report,
    parse_dimensions,
)
from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import (
    AuditEvent,
    Membership,
    Policy,
    Principal,
    PruneReport,
    new_id,
    utcnow,
)

__all__ = ["GovernanceAdmin", "PolicyTarget"]

logger = logging.getLogger(__name__)

PolicyTarget = Literal["principal", "key"]
_MIN_RETENTION = timedelta(days=1)


class GovernanceAdmin:
    """The governance half of ``Admin`` over one store (see that class)."""

    def __init__(self, store: Store, engine: PolicyEngine | None = None) -> None:
        self.store = store
        self._engine = engine

    @property
    def engine(self) -> PolicyEngine:
        """The policy engine budget figures are read through (the gateway's, when given)."""
        if self._engine is None:
            self._engine = PolicyEngine(self.store, cache_ttl=0)
        return self._engine

    # -- targets -------------------------------------------------------------------------

    def _principal(self, id_or_name: str) -> Principal:
        from tabpfn_gateway.errors import PrincipalNotFound

        found = self.store.get_principal(id_or_name) or self.store.get_principal_by_name(id_or_name)
        if found is None:
            raise PrincipalNotFound(f"No principal with id or name {id_or_name[:100]!r}.")
        return found

    def _target_id(self, target: str, kind: PolicyTarget) -> tuple[str, str]:
        if kind == "key":
            key = self.store.get_key(target)
            if key is None:
                raise KeyNotFound(f"No gateway key with id {target[:100]!r}.")
            return key.key_id, key.key_id
        if kind != "principal":
            raise InvalidRequest("A policy belongs to a 'principal' or a 'key'.")
        principal = self._principal(target)
        return principal.id, principal.name

    # -- policies ------------------------------------------------------------------------

    def set_policy(
        self,
        target: str,
        changes: dict[str, Any],
        *,
        kind: PolicyTarget = "principal",
        actor: str = "system",
        replace: bool = False,
    ) -> Policy:
        """Set fields of the policy of a principal (id or name) or key (id). Fields not given
        keep their value (``replace=True``: reset to "no limit" first); None unsets one."""
        target_id, label = self._target_id(target, kind)
        base = None if replace else self.store.get_policy(target_id)
        policy = build_policy(target_id, kind, dict(changes), base)
        with self.store.atomic() as tx:
            tx.put_policy(policy)
            tx.record_audit(
                _event(actor, "policy.set", kind, target_id, name=label, **_policy_details(policy))
            )
        logger.info("Policy of %s %s set by %s", kind, label, actor)
        return policy

    def get_policy(self, target: str, *, kind: PolicyTarget = "principal") -> Policy | None:
        """The policy of a principal or key, or None when it has none."""
        target_id, _ = self._target_id(target, kind)
        return self.store.get_policy(target_id)

    def clear_policy(
        self, target: str, *, kind: PolicyTarget = "principal", actor: str = "system"
    ) -> bool:
        """Remove a policy (no limits any more). False if there was none."""
        target_id, label = self._target_id(target, kind)
        with self.store.atomic() as tx:
            removed = tx.delete_policy(target_id)
            if removed:
                tx.record_audit(_event(actor, "policy.clear", kind, target_id, name=label))
        return removed

    def list_policies(self) -> list[Policy]:
        """Every policy, by target id."""
        return self.store.list_policies()

    def effective_policy(self, key_id: str) -> EffectivePolicy:
        """What applies to a key: its own, its owner's and its teams' policies, tightest-of."""
        key = self.store.get_key(key_id)
        if key is None:
            raise KeyNotFound(f"No gateway key with id {key_id[:100]!r}.")
        return PolicyEngine(self.store, cache_ttl=0).applicable(key)

    def budget_status(self, key_id: str) -> list[BudgetStatus]:
        """Every budget over a key, with spent, reserved and remaining credits this period."""
        key = self.store.get_key(key_id)
        if key is None:
            raise KeyNotFound(f"No gateway key with id {key_id[:100]!r}.")
        return self.engine.budget_status(key)

    # -- team membership -----------------------------------------------------------------

    def add_member(self, team: str, user: str, *, actor: str = "system") -> Membership:
        """Make ``user`` a member of ``team`` (names or ids). ``Conflict`` if already one."""
        team_p, user_p = self._principal(team), self._principal(user)
        if team_p.kind != "team":
            raise InvalidRequest(f"{team_p.name!r} is a user, not a team.")
        if user_p.kind != "user":
            raise InvalidRequest(f"{user_p.name!r} is a team; members of teams are users.")
        membership = Membership(team_id=team_p.id, user_id=user_p.id, created_at=utcnow())
        with self.store.atomic() as tx:
            try:
                stored = tx.add_membership(membership)
            except Conflict:
                raise Conflict(f"{user_p.name!r} is already a member of {team_p.name!r}.") from None
            tx.record_audit(
                _event(
                    actor,
                    "team.member.add",
                    "principal",
                    team_p.id,
                    team=team_p.name,
                    user=user_p.name,
                    user_id=user_p.id,
                )
            )
        return stored

    def remove_member(self, team: str, user: str, *, actor: str = "system") -> None:
        """End a membership; ``NotFound`` if there was none."""
        team_p, user_p = self._principal(team), self._principal(user)
        with self.store.atomic() as tx:
            if not tx.remove_membership(team_p.id, user_p.id):
                raise NotFound(f"{user_p.name!r} is not a member of {team_p.name!r}.")
            tx.record_audit(
                _event(
                    actor,
                    "team.member.remove",
                    "principal",
                    team_p.id,
                    team=team_p.name,
                    user=user_p.name,
                    user_id=user_p.id,
                )
            )

    def list_members(self, team: str) -> list[Membership]:
        """The members of a team."""
        return self.store.list_memberships(team_id=self._principal(team).id)

    def teams_of(self, user: str) -> list[Membership]:
        """The teams a user belongs to."""
        return self.store.list_memberships(user_id=self._principal(user).id)

    # -- reports and retention -----------------------------------------------------------

    def usage_report(
        self,
        by: str | Sequence[str] = (),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key_id: str | None = None,
        principal: str | None = None,
    ) -> UsageReport:
        """Usage rolled up by ``by`` (e.g. ``"team,day"``) over ``[since, until)``."""
        dims: tuple[ReportDimension, ...] = parse_dimensions(by)
        owner_id = self._principal(principal).id if principal is not None else None
        return build_usage_report(
            self.store, dims, since=since, until=until, key_id=key_id, owner_id=owner_id
        )

    def prune(self, older_than: timedelta, *, actor: str = "system") -> PruneReport:
        """Delete raw usage and audit events older than ``older_than`` (at least a day),
        keeping daily usage roll-ups; the pruning itself is audited."""
        if older_than < _MIN_RETENTION:
            raise InvalidRequest("Keep at least one day: --older-than must be 1d or more.")
        try:
            cutoff = utcnow() - older_than
        except OverflowError:
            raise InvalidRequest("--older-than reaches back past the calendar's edge.") from None
        report = self.store.prune(cutoff)
        self.store.record_audit(
            _event(
                actor,
                "db.prune",
                "database",
                "*",
                before=cutoff.isoformat(),
                usage_events=report.usage_events,
                audit_events=report.audit_events,
                counters=report.counters,
            )
        )
        logger.info(
            "Pruned %d usage and %d audit events before %s (by %s)",
            report.usage_events,
            report.audit_events,
            cutoff.isoformat(),
            actor,
        )
        return report


def _policy_details(policy: Policy) -> dict[str, Any]:
    return {
        "requests_per_minute": policy.requests_per_minute,
        "requests_per_hour": policy.requests_per_hour,
        "max_concurrent_fits": policy.max_concurrent_fits,
        "budget_credits": policy.budget_credits,
        "budget_period": policy.budget_period,
        "budget_window": policy.budget_window,
        "budget_mode": policy.budget_mode,
        "budget_unit": policy.budget_unit,
        "alert_thresholds": list(policy.alert_thresholds),
        "allowed_cidrs": list(policy.allowed_cidrs),
    }


def _event(actor: str, action: str, target_type: str, target_id: str, **details: Any) -> AuditEvent:
    return AuditEvent(
        id=new_id(),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        created_at=utcnow(),
        details=details,
    )
