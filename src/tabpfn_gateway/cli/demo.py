"""`tabpfn-gateway demo`: the whole path offline, once: store, key, a fitted classifier, usage.

Works on a fresh machine without network: the embedded SQLite store (migrated), an
in-process FakeTabPFN upstream (real TabPFN cloud instead when ``TABPFN_TOKEN`` is set and
the cloud accepts it), a principal, its credential and its gateway key (created once; later
runs reuse them, giving the key a new secret, so reruns add nothing to the store), a
``GatewayClassifier`` fitted on scikit-learn's breast-cancer data, and a printout of the
accuracy, the usage the gateway recorded, and where everything is stored.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabpfn_gateway.cli._output import add_json_flag, emit

if TYPE_CHECKING:
    import httpx

    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.gateway import Gateway

__all__ = ["DEMO_PRINCIPAL", "DemoReport", "register", "run_demo"]

DEMO_PRINCIPAL = "demo"
DEMO_KEY_NAME = "demo"
FAKE_CREDENTIAL_LABEL = "demo-fake-tabpfn"
CLOUD_CREDENTIAL_LABEL = "demo-tabpfn-cloud"
# Opens nothing but the in-process fake; stored encrypted like any token all the same.
FAKE_TOKEN = "demo-fake-tabpfn-token"  # noqa: S105


@dataclass
class DemoReport:
    """What one demo run did and found (printed by the command, asserted by tests)."""

    upstream: str
    accuracy: float
    train_rows: int
    test_rows: int
    key_id: str
    # The key's plaintext, shown once like any new key (the demo's store holds its hash).
    key: str = field(repr=False)
    principal_created: bool = False
    credential_created: bool = False
    key_created: bool = False
    usage: list[dict[str, Any]] = field(default_factory=list)
    total_calls_all_runs: int = 0
    database: str = ""
    data_dir: str = ""
    secret_key_file: str | None = None
    notes: list[str] = field(default_factory=list)


def register(subparsers: Any) -> None:
    """Add ``demo`` to the top-level parser."""
    parser = subparsers.add_parser(
        "demo",
        help="run the main job offline: key, fitted classifier, recorded usage",
        description="Create (or reuse) a demo principal and credential in the configured "
        "store, make a gateway key, fit a GatewayClassifier on scikit-learn's breast-cancer "
        "data through an in-process gateway, and print accuracy, usage and storage paths. "
        "Offline by default (FakeTabPFN); uses TabPFN cloud when TABPFN_TOKEN is set and valid.",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="always use the in-process FakeTabPFN, even when TABPFN_TOKEN is set",
    )
    add_json_flag(parser)
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from tabpfn_gateway.config import get_settings

    report = run_demo(get_settings(), offline=args.offline)
    if args.json:
        emit(report.__dict__, as_json=True)
    else:
        _print_report(report)
    return 0


def run_demo(
    settings: Settings, *, offline: bool = False, fake_transport: httpx.BaseTransport | None = None
) -> DemoReport:
    """Run the demo against ``settings``' store and return what happened.

    ``fake_transport``: a transport to an already running FakeTabPFN (default: a new one in
    process). With ``offline=False`` and ``TABPFN_TOKEN`` set, the token is verified against
    ``settings.upstream_url`` first; only a valid token switches the demo to the cloud.
    """
    from tabpfn_gateway import migrate
    from tabpfn_gateway.gateway import Gateway
    from tabpfn_gateway.store.sql import describe_url

    notes: list[str] = []
    if not settings.database_url.startswith("memory://"):
        migrate.upgrade(settings)

    cloud_token = None if offline else _usable_cloud_token(settings, notes)
    owned_transport = None
    if cloud_token is None and fake_transport is None:
        from tabpfn_gateway.testing.fake import FakeTabPFN
        from tabpfn_gateway.testing.transport import ASGIBridgeTransport

        owned_transport = ASGIBridgeTransport(FakeTabPFN(tokens=[FAKE_TOKEN]).app)
        fake_transport = owned_transport
    if cloud_token is None:
        settings = settings.model_copy(update={"upstream_url": "http://fake-tabpfn.local"})
    # The demo says where a generated secret went, once, in its report: the vault's
    # warning would otherwise open the output with four lines about it.
    with _quiet_secret_warning():
        gateway = Gateway.from_settings(
            settings,
            upstream_transport=None if cloud_token is not None else fake_transport,
            generate_secret=True,
        )
    try:
        report = _run(gateway, settings, cloud_token=cloud_token, notes=notes)
    finally:
        gateway.close()
        if owned_transport is not None:
            owned_transport.close()
    report.database = describe_url(settings.database_url)
    report.data_dir = str(settings.data_dir)
    secret_file = Path(settings.data_dir) / "secret_key"
    if settings.secret_key is None and secret_file.is_file():
        report.secret_key_file = str(secret_file)
    return report


@contextmanager
def _quiet_secret_warning() -> Iterator[None]:
    vault_logger = logging.getLogger("tabpfn_gateway.vault")

    def drop_generated_secret(record: logging.LogRecord) -> bool:
        return "generated one and stored it" not in record.getMessage()

    vault_logger.addFilter(drop_generated_secret)
    try:
        yield
    finally:
        vault_logger.removeFilter(drop_generated_secret)


def _usable_cloud_token(settings: Settings, notes: list[str]) -> str | None:
    token = os.environ.get("TABPFN_TOKEN", "").strip()
    if not token:
        return None
    from tabpfn_gateway.errors import GatewayError
    from tabpfn_gateway.protocol import TokenStatus, verify_tabpfn_token

    try:
        status = verify_tabpfn_token(token, base_url=settings.upstream_url)
    except GatewayError as exc:
        notes.append(
            f"TABPFN_TOKEN is set but TabPFN cannot be checked now ({exc}); used FakeTabPFN."
        )
        return None
    if status is TokenStatus.INVALID:
        notes.append("TABPFN_TOKEN is set but TabPFN rejected it; used FakeTabPFN.")
        return None
    return token


def _run(
    gateway: Gateway, settings: Settings, *, cloud_token: str | None, notes: list[str]
) -> DemoReport:
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    from tabpfn_gateway.estimators import GatewayClassifier, InProcessBackend

    store = gateway.store
    principal = store.get_principal_by_name(DEMO_PRINCIPAL)
    principal_created = principal is None
    if principal is None:
        principal = gateway.admin.add_principal(DEMO_PRINCIPAL, actor="demo")

    label = CLOUD_CREDENTIAL_LABEL if cloud_token is not None else FAKE_CREDENTIAL_LABEL
    existing = [
        c
        for c in store.list_credentials(owner_id=principal.id, limit=1000).items
        if c.label == label
    ]
    credential_created = not existing
    if existing:
        credential = existing[0]
    else:
        credential = gateway.admin.add_credential(
            principal.id, cloud_token or FAKE_TOKEN, label, actor="demo"
        )

    # One demo key, whatever the number of runs: a rerun gives it a new secret (its
    # plaintext exists only in this process) instead of adding a key to the user's store.
    reusable = [
        k
        for k in store.list_keys(owner_id=principal.id, limit=1000).items
        if k.name == DEMO_KEY_NAME
        and k.revoked_at is None
        and k.disabled_at is None
        and k.expires_at is None
        and k.credential_id == credential.id
    ]
    key_created = not reusable
    if reusable:
        created = gateway.keys.rotate(reusable[0].key_id, grace=timedelta(0), actor="demo")
    else:
        created = gateway.keys.create(principal.id, credential.id, DEMO_KEY_NAME, actor="demo")
    run_started = datetime.now(UTC)

    features, target = load_breast_cancer(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=0.25, stratify=target, random_state=0
    )
    classifier = GatewayClassifier(backend=InProcessBackend(gateway, created.plaintext))
    classifier.fit(x_train, y_train, description="tabpfn-gateway demo")
    accuracy = float(accuracy_score(y_test, classifier.predict(x_test)))

    gateway.usage.flush()
    usage = [
        {
            "operation": s.operation,
            "calls": s.calls,
            "errors": s.errors,
            "rows": s.rows,
        }
        for s in store.summarize_usage(key_id=created.record.key_id, since=run_started)
    ]
    total_calls = sum(s.calls for s in store.summarize_usage(owner_id=principal.id))
    return DemoReport(
        upstream=settings.upstream_url if cloud_token is not None else "FakeTabPFN (in process)",
        accuracy=accuracy,
        train_rows=len(x_train),
        test_rows=len(x_test),
        key_id=created.record.key_id,
        key=created.plaintext,
        principal_created=principal_created,
        credential_created=credential_created,
        key_created=key_created,
        usage=usage,
        total_calls_all_runs=total_calls,
        notes=notes,
    )


def _print_report(report: DemoReport) -> None:
    print("tabpfn-gateway demo")
    print(f"  upstream          {report.upstream}")
    principal_state = "created" if report.principal_created else "reused"
    print(f"  principal         {DEMO_PRINCIPAL} ({principal_state})")
    print(
        f"  credential        {'created' if report.credential_created else 'reused'} "
        "(TabPFN token stored encrypted)"
    )
    key_state = "created" if report.key_created else "reused, with a new secret"
    print(f"  gateway key       {report.key_id} ({key_state}; shown once below)")
    print()
    print(
        f"GatewayClassifier on breast cancer: fitted on {report.train_rows} rows, "
        f"accuracy on {report.test_rows} held-out rows: {report.accuracy:.3f}"
    )
    print()
    print("Usage recorded for this run's key (from the store):")
    width = max([len(u["operation"]) for u in report.usage] + [9])
    print(f"  {'OPERATION'.ljust(width)}  CALLS  ERRORS  ROWS")
    for u in report.usage:
        print(f"  {u['operation'].ljust(width)}  {u['calls']:>5}  {u['errors']:>6}  {u['rows']:>4}")
    print(f"  calls by the demo principal over all runs: {report.total_calls_all_runs}")
    print()
    print("Where things are:")
    print(f"  database          {report.database}")
    print(f"  data dir          {report.data_dir}")
    if report.secret_key_file:
        print(
            f"  secret key file   {report.secret_key_file} (generated; it decrypts the "
            "stored tokens: in production set TABPFN_GATEWAY_SECRET_KEY)"
        )
    for note in report.notes:
        print(f"note: {note}")
    print()
    print("Try the key over HTTP (pip install 'tabpfn-gateway[server]'), on this same store:")
    if report.upstream.startswith("FakeTabPFN"):
        print(f"  tabpfn-gateway fake-upstream --token {FAKE_TOKEN} &")
        print(f"  TABPFN_GATEWAY_UPSTREAM_URL={_FAKE_UPSTREAM_URL} tabpfn-gateway serve &")
    else:
        print("  tabpfn-gateway serve &")
    print(
        f"  TABPFN_GATEWAY_URL={_SERVE_URL} TABPFN_GATEWAY_API_KEY={report.key} python -c "
        f'"{_TRY_SNIPPET}"'
    )
    print("See README.md, docs/server.md and docs/sdk.md.")


_FAKE_UPSTREAM_URL = "http://127.0.0.1:8765"
_SERVE_URL = "http://127.0.0.1:8000"
# One line a user can paste: fits the SDK's classifier through the served gateway.
_TRY_SNIPPET = (
    "from sklearn.datasets import load_iris; from tabpfn_gateway import GatewayClassifier; "
    "X, y = load_iris(return_X_y=True); print(GatewayClassifier().fit(X, y).score(X, y))"
)
