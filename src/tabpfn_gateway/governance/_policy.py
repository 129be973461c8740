"""Policy input checks and the effective (tightest-of) policy of a key."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tabpfn_gateway.errors import InvalidRequest
from tabpfn_gateway.store.records import Policy, PolicyTargetType, utcnow

__all__ = [
    "POLICY_FIELDS",
    "EffectivePolicy",
    "PolicySource",
    "address_allowed",
    "build_policy",
    "effective_policy",
]

_MAX_LIMIT = 10**15
_MAX_THRESHOLD = 1000
_MAX_CIDRS = 100

#: The fields a policy change may set (everything but its target and time).
POLICY_FIELDS = (
    "requests_per_minute",
    "requests_per_hour",
    "max_concurrent_fits",
    "budget_credits",
    "budget_period",
    "budget_window",
    "budget_mode",
    "budget_unit",
    "alert_thresholds",
    "allowed_cidrs",
)


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_LIMIT:
        raise InvalidRequest(f"{name} must be an integer from 0 to {_MAX_LIMIT}, or unset.")
    return value


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidRequest(f"{name} must be one of {', '.join(choices)}.")
    return str(value)


def _thresholds(value: Any) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequest("alert_thresholds must be a list of percents, e.g. [50, 80, 100].")
    found: set[int] = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= _MAX_THRESHOLD:
            raise InvalidRequest(
                f"Each alert threshold is a whole percent from 1 to {_MAX_THRESHOLD}."
            )
        found.add(item)
    return tuple(sorted(found))


def _cidrs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequest("allowed_cidrs must be a list of CIDR ranges, e.g. ['10.0.0.0/8'].")
    if len(value) > _MAX_CIDRS:
        raise InvalidRequest(f"At most {_MAX_CIDRS} CIDR ranges per policy.")
    ranges: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.isascii():
            raise InvalidRequest("Each allowed CIDR is a string such as '10.0.0.0/8'.")
        try:
            # strict=False: 10.1.2.3/8 means 10.0.0.0/8, the way firewalls read it.
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise InvalidRequest(
                "An allowed CIDR is not an IPv4 or IPv6 range (e.g. 10.0.0.0/8)."
            ) from None
        if str(network) not in ranges:
            ranges.append(str(network))
    return tuple(ranges)


def build_policy(
    target_id: str, target_type: PolicyTargetType, changes: dict[str, Any], base: Policy | None
) -> Policy:
    """``base`` (or an empty policy) with ``changes`` applied, every value checked.

    A change to None unsets a limit; fields not named keep their value.
    """
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown policy fields: {', '.join(unknown)}.")
    values: dict[str, Any] = {}
    if base is not None:
        values = {name: getattr(base, name) for name in POLICY_FIELDS}
    values.update(changes)
    defaults = Policy(target_id=target_id, target_type=target_type)
    for name in POLICY_FIELDS:
        values.setdefault(name, getattr(defaults, name))
    if values["alert_thresholds"] is None:
        values["alert_thresholds"] = ()
    if values["allowed_cidrs"] is None:
        values["allowed_cidrs"] = ()
    if target_type != "key" and values["allowed_cidrs"]:
        raise InvalidRequest("CIDR allowlists belong to keys, not to principals.")
    return Policy(
        target_id=target_id,
        target_type=target_type,
        requests_per_minute=_positive("requests_per_minute", values["requests_per_minute"]),
        requests_per_hour=_positive("requests_per_hour", values["requests_per_hour"]),
        max_concurrent_fits=_positive("max_concurrent_fits", values["max_concurrent_fits"]),
        budget_credits=_positive("budget_credits", values["budget_credits"]),
        budget_period=_choice("budget_period", values["budget_period"], ("day", "month")),  # type: ignore[arg-type]
        budget_window=_choice(  # type: ignore[arg-type]
            "budget_window", values["budget_window"], ("calendar", "rolling")
        ),
        budget_mode=_choice("budget_mode", values["budget_mode"], ("hard", "soft")),  # type: ignore[arg-type]
        budget_unit=_choice(  # type: ignore[arg-type]
            "budget_unit", values["budget_unit"], ("credits", "cells", "calls")
        ),
        alert_thresholds=_thresholds(values["alert_thresholds"]),
        allowed_cidrs=_cidrs(values["allowed_cidrs"]),
        updated_at=utcnow(),
    )


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A policy that applies to a key, and why: ``level`` is ``key``, ``owner`` or ``team``."""

    level: str
    name: str
    policy: Policy


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """What applies to one key: the tightest of its own, its owner's and its teams' limits.

    Every source is enforced on its own counter (a team budget is shared by all members'
    keys), so the effective figure of each limit is the smallest one.
    """

    key_id: str
    sources: tuple[PolicySource, ...] = field(default=())
    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    max_concurrent_fits: int | None = None
    allowed_cidrs: tuple[tuple[str, ...], ...] = ()

    @property
    def empty(self) -> bool:
        return not self.sources


def _tightest(values: Sequence[int | None]) -> int | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None


def effective_policy(key_id: str, sources: Sequence[PolicySource]) -> EffectivePolicy:
    """The tightest-of view over the policies that apply to a key."""
    policies = [s.policy for s in sources]
    return EffectivePolicy(
        key_id=key_id,
        sources=tuple(sources),
        requests_per_minute=_tightest([p.requests_per_minute for p in policies]),
        requests_per_hour=_tightest([p.requests_per_hour for p in policies]),
        max_concurrent_fits=_tightest([p.max_concurrent_fits for p in policies]),
        allowed_cidrs=tuple(p.allowed_cidrs for p in policies if p.allowed_cidrs),
    )


def address_allowed(address: str | None, allowlists: Sequence[Sequence[str]]) -> bool:
    """Whether ``address`` is inside every allowlist (each level that has one must allow it).

    No allowlist: allowed. An allowlist but no known address (an in-process session has no
    network address; a malformed one): refused, never guessed.
    """
    if not allowlists:
        return True
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return all(
        any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in allowlist)
        for allowlist in allowlists
    )
