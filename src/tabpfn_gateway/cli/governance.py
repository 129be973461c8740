"""`tabpfn-gateway policy|teams`, `usage --by/--csv` and `db prune`: spend governance from the
shell (policies, team membership, usage reports, retention), all through ``Admin``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from tabpfn_gateway.cli._output import add_json_flag, emit

if TYPE_CHECKING:
    from tabpfn_gateway.store.records import Policy

__all__ = ["add_prune", "register", "report_usage"]


def register(subparsers: Any) -> None:
    """Add the ``policy`` and ``teams`` groups."""
    _register_policy(subparsers)
    _register_teams(subparsers)


def _group(subparsers: Any, name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def _command(group: Any, name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
    add_json_flag(parser)
    parser.set_defaults(handler=handler)
    return parser


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="principal name or id, or with --key a key id")
    parser.add_argument("--key", action="store_true", help="TARGET is a gateway key id")


# "--rpm none" removes a limit; argparse's None means "not given".
_CLEAR = object()


def _limit(text: str) -> object:
    return _CLEAR if text.lower() in ("none", "off", "unset") else int(text)


def _register_policy(subparsers: Any) -> None:
    group = _group(subparsers, "policy", "rate limits, fit caps, credit budgets, allowlists")
    setter = _command(
        group,
        "set",
        "set policy fields of a principal or key (others keep their value; 'none' unsets)",
        _policy_set,
    )
    _target(setter)
    setter.add_argument("--rpm", type=_limit, help="requests per minute")
    setter.add_argument("--rph", type=_limit, help="requests per hour")
    setter.add_argument("--max-concurrent-fits", type=_limit, help="fits running at once")
    setter.add_argument("--budget", type=_limit, help="budget per period, in --unit")
    setter.add_argument(
        "--unit",
        choices=("credits", "cells", "calls"),
        help="what the budget counts: TabPFN credits (default), cells (rows x columns of a "
        "prediction, cloud or hosted) or calls (predictions)",
    )
    setter.add_argument("--period", choices=("day", "month"), help="budget period")
    setter.add_argument(
        "--window", choices=("calendar", "rolling"), help="UTC calendar period or rolling"
    )
    setter.add_argument("--mode", choices=("hard", "soft"), help="hard refuses, soft alerts")
    setter.add_argument("--alerts", help="alert thresholds in percent, e.g. 50,80,100")
    setter.add_argument(
        "--allow-cidr",
        action="append",
        help="a network the key may be used from (repeat; keys only; 'none' clears)",
    )
    shower = _command(group, "show", "show a policy (with --key: the effective one)", _policy_show)
    _target(shower)
    clearer = _command(group, "clear", "remove a principal's or key's policy", _policy_clear)
    _target(clearer)
    _command(group, "list", "list every policy", _policy_list)


def _register_teams(subparsers: Any) -> None:
    group = _group(subparsers, "teams", "team membership (a team's limits cover its members)")
    add = _command(group, "add-member", "add a user to a team", _teams_add)
    add.add_argument("team")
    add.add_argument("user")
    remove = _command(group, "remove-member", "remove a user from a team", _teams_remove)
    remove.add_argument("team")
    remove.add_argument("user")
    members = _command(group, "members", "list a team's members", _teams_members)
    members.add_argument("team")


def add_prune(commands: Any) -> None:
    """Add ``db prune`` to the ``db`` group."""
    prune = commands.add_parser(
        "prune",
        help="delete raw usage and audit events older than a duration (daily roll-ups stay)",
    )
    add_json_flag(prune)
    prune.add_argument("--older-than", required=True, help="e.g. 400d, 52w")
    prune.set_defaults(handler=_prune)


# -- handlers ---------------------------------------------------------------------------------


def _admin(args: argparse.Namespace) -> Any:
    from tabpfn_gateway.cli.admin import _open_admin

    return _open_admin(args)[0]


def _actor() -> str:
    from tabpfn_gateway.cli.admin import _actor as actor

    return actor()


def _kind(args: argparse.Namespace) -> Any:
    return "key" if args.key else "principal"


def _policy_row(policy: Policy) -> dict[str, Any]:
    return {
        "target_id": policy.target_id,
        "target_type": policy.target_type,
        "requests_per_minute": policy.requests_per_minute,
        "requests_per_hour": policy.requests_per_hour,
        "max_concurrent_fits": policy.max_concurrent_fits,
        "budget_credits": policy.budget_credits,
        "budget_period": policy.budget_period,
        "budget_window": policy.budget_window,
        "budget_mode": policy.budget_mode,
        "budget_unit": policy.budget_unit,
        "alert_thresholds": ",".join(str(t) for t in policy.alert_thresholds),
        "allowed_cidrs": ",".join(policy.allowed_cidrs),
        "updated_at": policy.updated_at,
    }


def _policy_set(args: argparse.Namespace) -> int:
    from tabpfn_gateway.errors import InvalidRequest

    changes: dict[str, Any] = {}
    for option, field in (
        ("rpm", "requests_per_minute"),
        ("rph", "requests_per_hour"),
        ("max_concurrent_fits", "max_concurrent_fits"),
        ("budget", "budget_credits"),
        ("period", "budget_period"),
        ("window", "budget_window"),
        ("mode", "budget_mode"),
        ("unit", "budget_unit"),
    ):
        value = getattr(args, option)
        if value is not None:
            changes[field] = None if value is _CLEAR else value
    if args.alerts is not None:
        try:
            changes["alert_thresholds"] = [int(p) for p in args.alerts.split(",") if p.strip()]
        except ValueError:
            raise InvalidRequest("--alerts takes whole percents, e.g. 50,80,100.") from None
    if args.allow_cidr:
        cidrs = [c for c in args.allow_cidr if c.lower() != "none"]
        changes["allowed_cidrs"] = cidrs
    with _admin(args) as admin:
        if not changes:
            raise InvalidRequest("Nothing to set: give at least one option (see --help).")
        policy = admin.set_policy(args.target, changes, kind=_kind(args), actor=_actor())
    emit(_policy_row(policy), as_json=args.json)
    return 0


def _policy_show(args: argparse.Namespace) -> int:
    from tabpfn_gateway.errors import NotFound

    with _admin(args) as admin:
        if args.key:
            effective = admin.effective_policy(args.target)
            budgets = admin.budget_status(args.target)
            data: dict[str, Any] = {
                "key_id": effective.key_id,
                "requests_per_minute": effective.requests_per_minute,
                "requests_per_hour": effective.requests_per_hour,
                "max_concurrent_fits": effective.max_concurrent_fits,
                "sources": [
                    {"level": s.level, "name": s.name, **_policy_row(s.policy)}
                    for s in effective.sources
                ],
                "budgets": [
                    {
                        "level": b.level,
                        "budget": b.budget,
                        "unit": b.unit,
                        "spent": b.spent,
                        "reserved": b.reserved,
                        "remaining": b.remaining,
                        "resets_at": b.resets_at,
                    }
                    for b in budgets
                ],
            }
            if args.json:
                emit(data, as_json=True)
            else:
                emit(
                    {k: v for k, v in data.items() if k not in ("sources", "budgets")},
                    as_json=False,
                )
                for source in data["sources"]:
                    print(f"  from {source['level']} {source['name']}: {_describe(source)}")
                for budget in data["budgets"]:
                    print(
                        f"  budget ({budget['level']}): {budget['spent']} of {budget['budget']} "
                        f"{budget['unit']} spent, {budget['remaining']} left until "
                        f"{budget['resets_at']}"
                    )
            return 0
        policy = admin.get_policy(args.target, kind="principal")
        if policy is None:
            raise NotFound("This principal has no policy of its own.")
    emit(_policy_row(policy), as_json=args.json)
    return 0


def _describe(row: dict[str, Any]) -> str:
    parts = [
        f"{name}={row[name]}"
        for name in (
            "requests_per_minute",
            "requests_per_hour",
            "max_concurrent_fits",
            "budget_credits",
        )
        if row[name] is not None
    ]
    if row["budget_credits"] is not None:
        parts.append(
            f"{row['budget_unit']}, {row['budget_mode']} {row['budget_window']} "
            f"{row['budget_period']}"
        )
    if row["allowed_cidrs"]:
        parts.append(f"from {row['allowed_cidrs']}")
    return ", ".join(parts) or "no limits"


def _policy_clear(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        removed = admin.clear_policy(args.target, kind=_kind(args), actor=_actor())
    emit({"target": args.target, "removed": removed}, as_json=args.json)
    return 0


def _policy_list(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        policies = admin.list_policies()
    emit(
        [_policy_row(p) for p in policies],
        as_json=args.json,
        columns=[
            "target_type",
            "target_id",
            "requests_per_minute",
            "budget_credits",
            "budget_unit",
            "budget_mode",
        ],
    )
    return 0


def _membership_rows(admin: Any, memberships: list[Any]) -> list[dict[str, Any]]:
    names = admin.owner_names({m.team_id for m in memberships} | {m.user_id for m in memberships})
    return [
        {
            "team": names.get(m.team_id, m.team_id),
            "user": names.get(m.user_id, m.user_id),
            "since": m.created_at,
        }
        for m in memberships
    ]


def _teams_add(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        membership = admin.add_member(args.team, args.user, actor=_actor())
        rows = _membership_rows(admin, [membership])
    emit(rows[0], as_json=args.json)
    return 0


def _teams_remove(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        admin.remove_member(args.team, args.user, actor=_actor())
    emit({"team": args.team, "user": args.user, "removed": True}, as_json=args.json)
    return 0


def _teams_members(args: argparse.Namespace) -> int:
    with _admin(args) as admin:
        rows = _membership_rows(admin, admin.list_members(args.team))
    emit(rows, as_json=args.json, columns=["team", "user", "since"])
    return 0


def report_usage(args: argparse.Namespace, since: Any, until: Any, key_id: str | None) -> int:
    """``usage --by DIMS [--csv|--json]``: the usage report (see ``Admin.usage_report``)."""
    from tabpfn_gateway.governance import report_csv

    by = args.by or "key,operation"
    with _admin(args) as admin:
        report = admin.usage_report(
            by, since=since, until=until, key_id=key_id, principal=args.owner
        )
    if args.csv:
        sys.stdout.write(report_csv(report))
        return 0
    rows = [{**r.group, **_measures(r)} for r in report.rows]
    if args.json:
        emit(
            {
                "by": list(report.by),
                "since": report.since,
                "until": report.until,
                "rows": rows,
                "total": _measures(report.total),
            },
            as_json=True,
        )
        return 0
    emit(rows, as_json=False, columns=[*report.by, "calls", "errors", "credits", "rows", "bytes"])
    total = report.total
    print(f"total: {total.calls} calls, {total.credits} credits, {total.rows} rows")
    return 0


def _measures(row: Any) -> dict[str, int]:
    return {
        "calls": row.calls,
        "errors": row.errors,
        "credits": row.credits,
        "rows": row.rows,
        "bytes": row.bytes,
    }


def _prune(args: argparse.Namespace) -> int:
    from tabpfn_gateway.cli.admin import _parse_duration

    # Settings first (a bad database URL is the first thing to say), then the option.
    with _admin(args) as admin:
        older_than = _parse_duration(args.older_than, "--older-than")
        report = admin.prune(older_than, actor=_actor())
    emit(
        {
            "usage_events": report.usage_events,
            "audit_events": report.audit_events,
            "counters": report.counters,
        },
        as_json=args.json,
    )
    return 0
