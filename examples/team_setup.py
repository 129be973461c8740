"""Team setup: an admin registers one shared TabPFN token and hands out revocable keys.

What the ``tabpfn-gateway principals|credentials|keys`` commands do, in Python, on a real
SQLite store (migrated with Alembic) in a temporary directory, offline: FakeTabPFN stands in
for TabPFN cloud. In production the same calls run against your gateway's database, e.g.

    tabpfn-gateway principals add data-science --kind team
    tabpfn-gateway credentials add --owner data-science --label "team account" --token-stdin
    tabpfn-gateway keys create --owner alice --name laptop --credential <credential id>

and each person then uses ``GatewayClassifier(base_url=..., api_key=...)`` against the server.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from pydantic import SecretStr
from sklearn.datasets import load_breast_cancer

from tabpfn_gateway import Admin, Gateway, GatewayClassifier, InProcessBackend, migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import FittedModelNotFound, KeyRevoked
from tabpfn_gateway.protocol import verify_tabpfn_token
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

# FakeTabPFN accepts this token; with TabPFN cloud it would be your account's token.
SHARED_TABPFN_TOKEN = "the-teams-tabpfn-token"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'gateway.db'}",
            data_dir=Path(tmp),
            secret_key=SecretStr(secrets.token_urlsafe(32)),
            upstream_url="http://fake-tabpfn.local",
        )
        migrate.upgrade(settings)
        fake = FakeTabPFN(tokens=[SHARED_TABPFN_TOKEN])
        with ASGIBridgeTransport(fake.app) as upstream:
            run(settings, upstream)


def run(settings: Settings, upstream: ASGIBridgeTransport) -> None:
    # -- the admin's part ------------------------------------------------------------------
    with Admin.from_settings(settings) as admin:
        team = admin.add_principal("data-science", kind="team")
        alice = admin.add_principal("alice")
        bob = admin.add_principal("bob")
        # The token is checked against the upstream before it is stored (encrypted).
        shared = admin.add_credential(
            team.id,
            SHARED_TABPFN_TOKEN,
            "team account",
            verify=lambda token: verify_tabpfn_token(
                token, base_url=settings.upstream_url, transport=upstream
            ),
        )
        alice_key = admin.keys.create(alice.id, shared.id, "alice-laptop")
        bob_key = admin.keys.create(bob.id, shared.id, "bob-notebook")
        print(f"credential {shared.id[:8]}... verified at {shared.verified_at:%H:%M:%S}")
        for who, created in (("alice", alice_key), ("bob", bob_key)):
            # The plaintext is shown once, here; only a hash is stored.
            print(f"key for {who}: {created.record.display_prefix}...{created.record.last4}")

    # -- each person's part (here in process; normally over HTTP to the server) -------------
    gateway = Gateway.from_settings(settings, upstream_transport=upstream)
    try:
        X, y = load_breast_cancer(return_X_y=True)
        alice_clf = GatewayClassifier(
            backend=InProcessBackend(gateway, alice_key.plaintext), progress=False
        ).fit(X, y)
        bob_clf = GatewayClassifier(
            backend=InProcessBackend(gateway, bob_key.plaintext), progress=False
        ).fit(X[::2], y[::2])
        print(f"alice accuracy: {alice_clf.score(X, y):.3f}")
        print(f"bob accuracy: {bob_clf.score(X, y):.3f}")

        # A fit belongs to the principal whose key made it: bob cannot use alice's.
        borrowed = GatewayClassifier(backend=bob_clf.backend).fit(X[:50], y[:50])
        borrowed.model_id_ = alice_clf.model_id_
        try:
            borrowed.predict(X[:5])
        except FittedModelNotFound as exc:
            print(f"bob using alice's fit: {exc.error_code}")

        # Revoking bob's key stops bob at once; alice is unaffected.
        gateway.keys.revoke(bob_key.record.key_id, actor="admin")
        try:
            bob_clf.predict(X[:5])
        except KeyRevoked as exc:
            print(f"bob after revocation: {exc.error_code}")
        print(f"alice after bob's revocation: {alice_clf.predict(X[:5])}")

        # Usage per key, from the store.
        gateway.usage.flush()
        for who, created in (("alice", alice_key), ("bob", bob_key)):
            summary = gateway.store.summarize_usage(key_id=created.record.key_id)
            calls = {s.operation: s.calls for s in summary}
            print(f"usage of {who}'s key: {calls}")
    finally:
        gateway.close()


if __name__ == "__main__":
    main()
