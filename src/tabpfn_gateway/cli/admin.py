"""`tabpfn-gateway keys|credentials|secrets|principals|usage|audit`: administration from the shell.

Human tables by default, ``--json`` for scripts. A new key goes alone to stdout and its
warning to stderr, so ``KEY=$(tabpfn-gateway keys create ...)`` captures just the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tabpfn_gateway.cli._output import add_json_flag, emit, to_jsonable

if TYPE_CHECKING:
    from tabpfn_gateway.admin import Admin
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.keys import CreatedKey
    from tabpfn_gateway.store.records import ApiKey, Principal, UpstreamCredential

__all__ = ["register"]

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SHOWN_ONCE = "Copy it now: it will not be shown again."


# -- parser ------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add the ``keys``, ``credentials``, ``secrets`` and ``principals`` groups, and the
    ``usage`` and ``audit`` commands."""
    _register_principals(subparsers)
    _register_credentials(subparsers)
    _register_keys(subparsers)
    _register_secrets(subparsers)
    _register_reports(subparsers)


def _group(subparsers: Any, name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=lambda args: _help(parser))
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _command(
    group: Any, name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text)
    add_json_flag(parser)
    parser.set_defaults(handler=handler)
    return parser


def _add_paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
    parser.add_argument("--cursor", help="the next_cursor a previous --json page printed")


def _register_principals(subparsers: Any) -> None:
    group = _group(subparsers, "principals", "users and teams that own keys and credentials")
    add = _command(group, "add", "add a user or team", _principals_add)
    add.add_argument("name", help="unique name (letters, digits, . _ @ + -)")
    add.add_argument("--kind", choices=("user", "team"), default="user")
    listing = _command(group, "list", "list principals, newest first", _principals_list)
    listing.add_argument("--kind", choices=("user", "team"))
    _add_paging(listing)


def _register_credentials(subparsers: Any) -> None:
    group = _group(
        subparsers, "credentials", "TabPFN tokens and self-hosted endpoints, stored encrypted"
    )
    add = _command(
        group,
        "add",
        "store a TabPFN token (or, with --kind hosted, a self-hosted container) for a principal",
        _credentials_add,
    )
    add.add_argument("--owner", required=True, help="principal name or id")
    add.add_argument("--label", required=True, help="a name for humans, e.g. 'team account'")
    add.add_argument(
        "--kind",
        choices=["cloud", "hosted"],
        default="cloud",
        help="cloud: a TabPFN token (default); hosted: a self-hosted inference container",
    )
    add.add_argument(
        "--endpoint",
        "--upstream-url",
        dest="endpoint",
        help=(
            "hosted: the container's /predict URL, e.g. http://10.0.0.5/predict; cloud: this "
            "credential's own TabPFN API root (default TABPFN_GATEWAY_UPSTREAM_URL)"
        ),
    )
    add.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hosted: a header sent with every request (repeatable; stored encrypted)",
    )
    add.add_argument(
        "--timeout", type=float, help="hosted: seconds one prediction may take (default 900)"
    )
    add.add_argument(
        "--connect-timeout", type=float, help="hosted: seconds to connect (default 10)"
    )
    source = add.add_mutually_exclusive_group()
    source.add_argument(
        "--token-stdin", action="store_true", help="read the token from stdin (for scripts)"
    )
    source.add_argument(
        "--token", help="the token itself (discouraged: it lands in shell history and ps)"
    )
    add.add_argument(
        "--no-verify",
        action="store_true",
        help="store without asking the upstream whether the token works",
    )
    listing = _command(group, "list", "list credentials (never their tokens)", _credentials_list)
    listing.add_argument("--owner", help="only this principal's (name or id)")
    _add_paging(listing)
    remove = _command(group, "remove", "delete a credential", _credentials_remove)
    remove.add_argument("credential_id")


def _register_keys(subparsers: Any) -> None:
    group = _group(subparsers, "keys", "gateway keys: create, list, rotate, revoke")
    create = _command(group, "create", "create a key (printed once)", _keys_create)
    create.add_argument("--owner", required=True, help="principal name or id")
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'laptop'")
    create.add_argument(
        "--credential",
        help="credential id the key calls TabPFN with (default: the owner's only one; "
        "none for --admin)",
    )
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        choices=("inference", "usage", "admin"),
        help="repeat for several (default: inference and usage)",
    )
    create.add_argument("--expires", help="a duration (30d, 12h) or an ISO 8601 time (UTC)")
    create.add_argument("--admin", action="store_true", help="an admin key (tpga_ prefix)")
    create.add_argument("--quiet", action="store_true", help="print only the key")
    listing = _command(group, "list", "list keys, newest first", _keys_list)
    listing.add_argument("--owner", help="only this principal's (name or id)")
    _add_paging(listing)
    for name, help_text, handler in (
        ("show", "show one key", _keys_show),
        ("revoke", "revoke a key for good", _keys_revoke),
        ("disable", "refuse a key until enabled", _keys_disable),
        ("enable", "accept a disabled key again", _keys_enable),
    ):
        parser = _command(group, name, help_text, handler)
        parser.add_argument("key_id", help="key id or display prefix (tpg_...)")
    expire = _command(group, "expire", "move a key's expiry, or remove it", _keys_expire)
    expire.add_argument("key_id", help="key id or display prefix (tpg_...)")
    when = expire.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="a duration from now (30d, 12h) or an ISO 8601 time (UTC)")
    when.add_argument("--never", action="store_true", help="remove the expiry")
    rotate = _command(group, "rotate", "give a key a new secret (printed once)", _keys_rotate)
    rotate.add_argument("key_id", help="key id or display prefix (tpg_...)")
    rotate.add_argument(
        "--grace", default="24h", help="how long the old secret keeps working (default 24h; 0)"
    )
    rotate.add_argument("--request-id", help="repeat it to get the same new key back")
    rotate.add_argument("--quiet", action="store_true", help="print only the key")


def _register_secrets(subparsers: Any) -> None:
    group = _group(subparsers, "secrets", "the secret that encrypts stored TabPFN tokens")
    _command(
        group,
        "rotate",
        "re-encrypt every stored token under TABPFN_GATEWAY_SECRET_KEY",
        _secrets_rotate,
    )


def _register_reports(subparsers: Any) -> None:
    usage = subparsers.add_parser(
        "usage",
        help="calls, errors, rows and bytes per key and operation",
        description="Calls, errors, rows, bytes and latency per key and operation.",
    )
    add_json_flag(usage)
    usage.add_argument("--key", help="only this key (id or display prefix)")
    usage.add_argument("--owner", help="only this principal's keys (name or id)")
    usage.add_argument("--since", help="from (inclusive): a duration ago (7d) or an ISO time")
    usage.add_argument("--until", help="to (exclusive): a duration ago (1h) or an ISO time")
    usage.add_argument(
        "--by",
        help="roll up by principal, team, key, operation, day or month (e.g. team,day); "
        "with credits, calls, rows and bytes",
    )
    usage.add_argument("--csv", action="store_true", help="print the roll-up as CSV")
    usage.set_defaults(handler=_usage)
    audit = subparsers.add_parser(
        "audit", help="who changed what, newest first", description="The audit log."
    )
    add_json_flag(audit)
    audit.add_argument("--target", help="only events about this id")
    audit.add_argument("--actor", help="only events by this actor (e.g. cli:alice)")
    audit.add_argument("--action", help="only this action (e.g. key.revoke)")
    _add_paging(audit)
    audit.set_defaults(handler=_audit)


# -- handlers ----------------------------------------------------------------------------------


def _open_admin(args: argparse.Namespace) -> tuple[Admin, Settings]:
    from tabpfn_gateway.admin import Admin
    from tabpfn_gateway.config import get_settings

    settings = get_settings()
    # On the embedded SQLite store the CLI and the server share one data dir, so a secret
    # generated here (on first use, with a warning) is the one the server uses; and the key
    # pepper is then derived from it. On a shared database a local secret would be wrong.
    # Running servers cache verified keys: Admin announces every change on the replicas'
    # invalidation channel (PostgreSQL NOTIFY or Redis), so they refuse a revoked key on its
    # next request instead of when their cache expires.
    admin = Admin.from_settings(
        settings,
        generate_secret=settings.is_sqlite,
        # main(..., upstream_transport=...) injects one (tests: an in-process FakeTabPFN).
        upstream_transport=getattr(args, "upstream_transport", None),
    )
    return admin, settings


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name in some containers
        return "cli"


def _principals_add(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        principal = admin.add_principal(args.name, args.kind, actor=_actor())
    emit(_principal_row(principal), as_json=args.json)
    return 0


def _principals_list(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        page = admin.list_principals(kind=args.kind, limit=args.limit, cursor=args.cursor)
    _emit_page(
        [_principal_row(p) for p in page.items],
        page.next_cursor,
        args.json,
        ["name", "kind", "id", "created_at"],
    )
    return 0


def _credentials_add(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from tabpfn_gateway.errors import InvalidRequest

    if args.kind == "hosted":
        return _credentials_add_hosted(args)
    if args.header or args.timeout or args.connect_timeout:
        raise InvalidRequest("--header and the timeouts need --kind hosted.")
    token = _read_token(args)
    if not token:
        raise InvalidRequest("No TabPFN token given.")
    admin, _ = _open_admin(args)
    with admin:
        credential = admin.add_credential(
            args.owner,
            SecretStr(token),
            args.label,
            endpoint_url=args.endpoint,
            verify=not args.no_verify,
            actor=_actor(),
        )
        owner = admin.get_principal(credential.owner_id)
    emit(_credential_row(credential, owner.name), as_json=args.json)
    return 0


def _credentials_add_hosted(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from tabpfn_gateway.errors import InvalidRequest

    if not args.endpoint:
        raise InvalidRequest("--kind hosted needs --endpoint URL (the container's /predict URL).")
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidRequest("--header takes NAME=VALUE.")
        headers[name.strip()] = value
    token = _read_token(args, optional=True)
    admin, settings = _open_admin(args)
    with admin:
        credential = admin.add_hosted_credential(
            args.owner,
            args.label,
            endpoint_url=args.endpoint,
            token=SecretStr(token) if token else None,
            extra_headers=headers,
            timeout_seconds=args.timeout,
            connect_timeout_seconds=args.connect_timeout,
            verify=None if args.no_verify else _hosted_verifier(settings),
            actor=_actor(),
        )
        owner = admin.get_principal(credential.owner_id)
    emit(_credential_row(credential, owner.name), as_json=args.json)
    return 0


def _hosted_verifier(settings: Settings) -> Callable[[Any], Any]:
    from tabpfn_gateway.hosted import verify_hosted_endpoint

    def verify(endpoint: Any) -> Any:
        return verify_hosted_endpoint(
            endpoint, timeout=max(settings.upstream_connect_timeout_seconds, 30.0)
        )

    return verify


def _read_token(args: argparse.Namespace, *, optional: bool = False) -> str:
    from tabpfn_gateway.errors import InvalidRequest

    if args.token is not None:
        print(
            "warning: --token puts the token in your shell history and the process list; "
            "prefer --token-stdin or the prompt.",
            file=sys.stderr,
        )
        return str(args.token).strip()
    if args.token_stdin:
        return sys.stdin.read().strip()
    if not sys.stdin.isatty():
        if optional:
            return ""  # a container without authentication
        raise InvalidRequest("No terminal to prompt for the token: use --token-stdin.")
    if optional:
        return getpass.getpass("Bearer token of the container (empty: none; hidden): ").strip()
    return getpass.getpass("TabPFN token (input hidden): ").strip()


def _credentials_list(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        page = admin.list_credentials(owner=args.owner, limit=args.limit, cursor=args.cursor)
        names = admin.owner_names(c.owner_id for c in page.items)
    rows = [_credential_row(c, names.get(c.owner_id)) for c in page.items]
    _emit_page(
        rows,
        page.next_cursor,
        args.json,
        ["id", "label", "owner", "kind", "created_at", "verified_at"],
    )
    return 0


def _credentials_remove(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        admin.remove_credential(args.credential_id, actor=_actor())
    emit({"removed": args.credential_id}, as_json=args.json)
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        created = admin.create_key(
            args.owner,
            args.credential,
            args.name,
            scopes=tuple(args.scopes) if args.scopes else None,
            expires_at=_parse_expiry(args.expires) if args.expires else None,
            admin=args.admin,
            actor=_actor(),
        )
        owner = admin.get_principal(created.record.owner_id)
    _show_new_key(created, owner.name, args, "Created")
    return 0


def _keys_expire(args: argparse.Namespace) -> int:
    expires_at = None if args.never else _parse_expiry(args.at, "--at")
    admin, _ = _open_admin(args)
    with admin:
        record = admin.set_key_expiry(args.key_id, expires_at, actor=_actor())
        names = admin.owner_names([record.owner_id])
    emit(_key_row(record, names.get(record.owner_id)), as_json=args.json)
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        created = admin.rotate_key(
            args.key_id,
            grace=_parse_duration(args.grace, "--grace"),
            request_id=args.request_id,
            actor=_actor(),
        )
        owner = admin.get_principal(created.record.owner_id)
    _show_new_key(created, owner.name, args, "Rotated")
    return 0


def _show_new_key(
    created: CreatedKey, owner_name: str, args: argparse.Namespace, verb: str
) -> None:
    record = created.record
    if args.json:
        row = _key_row(record, owner_name)
        row["key"] = created.plaintext
        json.dump(to_jsonable(row), sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(created.plaintext)
    if not args.quiet:
        print(
            f"{verb} key {record.display_prefix} ({record.name}) for {owner_name}.", file=sys.stderr
        )
        if record.previous_valid_until is not None and verb == "Rotated":
            print(
                f"The old secret works until {record.previous_valid_until.isoformat()}.",
                file=sys.stderr,
            )
        print(f"warning: {_SHOWN_ONCE}", file=sys.stderr)


def _keys_list(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        page = admin.list_keys(owner=args.owner, limit=args.limit, cursor=args.cursor)
        names = admin.owner_names(k.owner_id for k in page.items)
    rows = [_key_row(k, names.get(k.owner_id)) for k in page.items]
    _emit_page(
        rows,
        page.next_cursor,
        args.json,
        ["display_prefix", "name", "owner", "scopes", "status", "created_at", "last_used_at"],
    )
    return 0


def _key_action(action: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        admin, _ = _open_admin(args)
        with admin:
            if action == "show":
                record = admin.get_key(args.key_id)
            else:
                record = getattr(admin, f"{action}_key")(args.key_id, actor=_actor())
            names = admin.owner_names([record.owner_id])
        emit(_key_row(record, names.get(record.owner_id)), as_json=args.json)
        return 0

    return handler


_keys_show = _key_action("show")
_keys_revoke = _key_action("revoke")
_keys_disable = _key_action("disable")
_keys_enable = _key_action("enable")


def _secrets_rotate(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        report = admin.rotate_secrets(actor=_actor())
    emit(
        {
            "rows": report.rows,
            "reencrypted": report.reencrypted,
            "already_current": report.already_current,
        },
        as_json=args.json,
    )
    return 0


def _usage(args: argparse.Namespace) -> int:
    from tabpfn_gateway.admin import key_id_of

    if args.by or args.csv:
        from tabpfn_gateway.cli.governance import report_usage

        return report_usage(
            args,
            _parse_past(args.since, "--since") if args.since else None,
            _parse_past(args.until, "--until") if args.until else None,
            key_id_of(args.key) if args.key else None,
        )
    admin, _ = _open_admin(args)
    with admin:
        rows = admin.summarize_usage(
            key_id=key_id_of(args.key) if args.key else None,
            owner=args.owner,
            since=_parse_past(args.since, "--since") if args.since else None,
            until=_parse_past(args.until, "--until") if args.until else None,
        )
    emit(
        [dataclasses.asdict(row) for row in rows],
        as_json=args.json,
        columns=[
            "key_id",
            "operation",
            "calls",
            "errors",
            "credits",
            "rows",
            "bytes",
            "total_latency_ms",
        ],
    )
    return 0


def _audit(args: argparse.Namespace) -> int:
    admin, _ = _open_admin(args)
    with admin:
        page = admin.list_audit(
            target_id=args.target,
            actor=args.actor,
            action=args.action,
            limit=args.limit,
            cursor=args.cursor,
        )
    _emit_page(
        [dataclasses.asdict(event) for event in page.items],
        page.next_cursor,
        args.json,
        ["created_at", "actor", "action", "target_type", "target_id"],
    )
    return 0


# -- rows and parsing --------------------------------------------------------------------------


def _emit_page(
    rows: list[dict[str, Any]], next_cursor: str | None, as_json: bool, columns: list[str]
) -> None:
    if as_json:
        emit({"items": rows, "next_cursor": next_cursor}, as_json=True)
        return
    emit(rows, as_json=False, columns=columns)
    if next_cursor:
        print(f"(more: --cursor {next_cursor})")


def _principal_row(principal: Principal) -> dict[str, Any]:
    return {
        "id": principal.id,
        "name": principal.name,
        "kind": principal.kind,
        "created_at": principal.created_at,
    }


def _credential_row(credential: UpstreamCredential, owner_name: str | None) -> dict[str, Any]:
    # Never the ciphertext: it is bytes, and _output drops bytes anyway.
    return {
        "id": credential.id,
        "label": credential.label,
        "owner": owner_name or credential.owner_id,
        "owner_id": credential.owner_id,
        "kind": credential.kind,
        "endpoint_url": credential.endpoint_url,
        "created_at": credential.created_at,
        "verified_at": credential.verified_at,
    }


def _key_row(key: ApiKey, owner_name: str | None) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "display_prefix": key.display_prefix,
        "last4": key.last4,
        "name": key.name,
        "owner": owner_name or key.owner_id,
        "owner_id": key.owner_id,
        "credential_id": key.credential_id,
        "scopes": list(key.scopes),
        "status": key.state(),
        "hash_scheme": key.hash_scheme,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "disabled_at": key.disabled_at,
        "rotated_at": key.rotated_at,
        "previous_valid_until": key.previous_valid_until,
    }


def _parse_duration(text: str, option: str) -> timedelta:
    from tabpfn_gateway.errors import InvalidRequest

    text = text.strip()
    if text == "0":
        return timedelta(0)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise InvalidRequest(f"{option} takes a duration like 30m, 24h, 7d or 0, not {text!r}.")
    try:
        return timedelta(**{_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise InvalidRequest(f"{option} is longer than a calendar can hold: {text!r}.") from None


def _from_now(delta: timedelta, option: str, text: str) -> datetime:
    """Now plus ``delta`` (negative: ago); past the calendar's edge is ``InvalidRequest``."""
    from tabpfn_gateway.errors import InvalidRequest

    try:
        return datetime.now(UTC) + delta
    except OverflowError:
        raise InvalidRequest(f"{option} {text!r} reaches past the calendar's edge.") from None


def _parse_past(text: str, option: str) -> datetime:
    """A duration ago (7d) or an ISO 8601 time (UTC when no zone is given)."""
    if _DURATION.fullmatch(text.strip()):
        return _from_now(-_parse_duration(text, option), option, text)
    return _parse_time(text, option)


def _parse_time(text: str, option: str) -> datetime:
    from tabpfn_gateway.errors import InvalidRequest

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"{option} takes a duration (30d, 12h) or an ISO 8601 time, not {text!r}."
        ) from None
    # A time without a zone is read as UTC, the zone every stored time is in.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _parse_expiry(text: str, flag: str = "--expires") -> datetime:
    # create --expires and expire --at take the same forms.
    if _DURATION.fullmatch(text.strip()):
        return _from_now(_parse_duration(text, flag), flag, text)
    return _parse_time(text, flag)
