"""The authoriser's one decision cache and the spend-policy seam, through real gateways."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from gateway_support import Tenant, add_tenant, make_settings
from tabpfn_gateway.errors import (
    CredentialNotFound,
    GatewayError,
    InsufficientScope,
    KeyDisabled,
    KeyRevoked,
)
from tabpfn_gateway.gateway import Admission, Caller, Gateway, LocalBus, Meter
from tabpfn_gateway.gateway._authoriser import _DecisionCache
from tabpfn_gateway.store import ApiKey, utcnow
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

TOKENS = ("tok-policy-alpha-1", "tok-policy-bravo-2")


class Refused(GatewayError):
    """What the test policy raises once the allowance is spent."""

    error_code = "USAGE_LIMIT_REACHED"


class CountingPolicy:
    """Admits ``allowance`` operations; records every admit, settle and refund."""

    def __init__(self, allowance: int) -> None:
        self.allowance = allowance
        self.log: list[tuple[str, str]] = []

    def admit(self, caller: Caller, operation: str, meter: Meter) -> Admission:
        self.log.append(("admit", operation))
        if self.allowance <= 0:
            raise Refused("spent")
        self.allowance -= 1
        policy = self

        class Reserved:
            def settle(self, meter: Meter) -> None:
                policy.log.append(("settle", operation))

            def refund(self) -> None:
                policy.allowance += 1
                policy.log.append(("refund", operation))

        return Reserved()


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN(tokens=TOKENS)


def _gateway(tmp_path: Path, fake: FakeTabPFN, policy: CountingPolicy | None = None) -> Gateway:
    return Gateway.from_settings(
        make_settings(tmp_path, "memory://"),
        upstream_transport=ASGIBridgeTransport(fake.app),
        async_upstream_transport=httpx.ASGITransport(app=fake.app),
        bus=LocalBus(),
        policy=policy,
    )


@pytest.fixture
def policy() -> CountingPolicy:
    return CountingPolicy(allowance=2)


@pytest.fixture
def gateway(tmp_path: Path, fake: FakeTabPFN, policy: CountingPolicy) -> Iterator[Gateway]:
    gw = _gateway(tmp_path, fake, policy)
    yield gw
    gw.close()


@pytest.fixture
def alice(gateway: Gateway) -> Tenant:
    return add_tenant(gateway, "alice", TOKENS[0])


def test_the_default_policy_admits_everything(tmp_path: Path, fake: FakeTabPFN) -> None:
    from tabpfn_gateway.governance import GovernancePolicy

    gw = _gateway(tmp_path, fake)
    try:
        # The governance policy, which admits everything while no policy is set.
        assert isinstance(gw.meter.policy, GovernancePolicy)
        tenant = add_tenant(gw, "carol", TOKENS[1])
        for _ in range(5):
            assert gw.session(tenant.key).check_token() is True
    finally:
        gw.close()


def test_a_refusal_forwards_nothing_and_is_metered_with_its_status(
    gateway: Gateway, fake: FakeTabPFN, policy: CountingPolicy, alice: Tenant
) -> None:
    session = gateway.session(alice.key)
    assert session.check_token() is True
    assert session.get_settings() is not None
    forwarded = len(fake.requests)
    with pytest.raises(Refused):
        session.check_token()
    assert len(fake.requests) == forwarded, "a refused call must never reach the upstream"
    assert policy.log == [
        ("admit", "protected"),
        ("settle", "protected"),
        ("admit", "get_settings"),
        ("settle", "get_settings"),
        ("admit", "protected"),
    ]
    events = gateway.admin.list_usage(key_id=alice.key_id).items
    assert sorted(e.status for e in events) == [200, 200, 429]
    # The refusal keeps its error code (a 429 may be a rate limit or a budget); successes none.
    assert sorted((e.status, e.error_code or "") for e in events) == [
        (200, ""),
        (200, ""),
        (429, "USAGE_LIMIT_REACHED"),
    ]


def test_a_failed_call_is_refunded(
    gateway: Gateway, fake: FakeTabPFN, policy: CountingPolicy, alice: Tenant
) -> None:
    session = gateway.session(alice.key)
    fake.fail_next(5, status=401, path="/protected")
    with pytest.raises(GatewayError):
        session.check_token()
    assert policy.log == [("admit", "protected"), ("refund", "protected")]
    assert policy.allowance == 2, "the reservation of a failed call comes back"
    (failed,) = gateway.admin.list_usage(key_id=alice.key_id).items
    assert failed.status >= 400
    assert failed.error_code is not None
    assert failed.error_code.startswith("UPSTREAM_") or failed.error_code.startswith("CREDENTIAL")


def test_governance_refusals_are_recorded_with_their_error_code(
    tmp_path: Path, fake: FakeTabPFN
) -> None:
    gw = _gateway(tmp_path, fake)
    try:
        tenant = add_tenant(gw, "dora", TOKENS[1])
        gw.admin.set_policy(tenant.principal_id, {"requests_per_minute": 1}, actor="test")
        session = gw.session(tenant.key)
        assert session.check_token() is True
        with pytest.raises(GatewayError) as refused:
            session.check_token()
        assert refused.value.error_code == "RATE_LIMITED"
        fake.fail_next(5, status=503, path="/protected")
        gw.admin.clear_policy(tenant.principal_id, actor="test")
        with pytest.raises(GatewayError) as failed:
            session.check_token()
        assert failed.value.error_code == "UPSTREAM_UNAVAILABLE"
        events = gw.admin.list_usage(key_id=tenant.key_id).items
        assert [(e.status, e.error_code) for e in reversed(events)] == [
            (200, None),
            (429, "RATE_LIMITED"),
            (503, "UPSTREAM_UNAVAILABLE"),
        ]
    finally:
        gw.close()


def test_decisions_are_cached_and_dropped_by_revocation(gateway: Gateway, alice: Tenant) -> None:
    first = gateway.authoriser.authorise(alice.key, scope="inference")
    again = gateway.authoriser.authorise_from_memory(alice.key, scope="inference")
    assert again is not None
    assert again.caller == first.caller
    assert again.token.get_secret_value() == TOKENS[0]
    assert "tok-policy" not in repr(again)
    # A scope the key lacks is never answered from memory: the slow path says why.
    assert gateway.authoriser.authorise_from_memory(alice.key, scope="admin") is None
    with pytest.raises(InsufficientScope):
        gateway.authoriser.authenticate(alice.key, scope="admin")
    gateway.admin.disable_key(alice.key_id, actor="test")
    assert gateway.authoriser.authorise_from_memory(alice.key, scope="inference") is None
    with pytest.raises(KeyDisabled):
        gateway.authoriser.authorise(alice.key, scope="inference")
    gateway.admin.enable_key(alice.key_id, actor="test")
    assert gateway.authoriser.authorise(alice.key, scope="inference").caller.key_id == alice.key_id
    gateway.admin.revoke_key(alice.key_id, actor="test")
    assert gateway.authoriser.key_alive_from_memory(alice.key_id) is None
    with pytest.raises(KeyRevoked):
        gateway.authoriser.check_key_alive(alice.key_id)


def test_an_upload_urls_key_is_asked_once_per_ttl_and_dropped_with_the_key(
    gateway: Gateway, alice: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large sets arrive in many chunk uploads, each naming its key by id: once the key's
    # decision aged out, every chunk read the key and decrypted the token again.
    authoriser, store = gateway.authoriser, gateway.store
    reads: list[str] = []
    get_key, get_credential = store.get_key, store.get_credential
    monkeypatch.setattr(store, "get_key", lambda key_id: reads.append(key_id) or get_key(key_id))
    monkeypatch.setattr(
        store,
        "get_credential",
        lambda credential_id: reads.append(credential_id) or get_credential(credential_id),
    )
    assert authoriser.key_alive_from_memory(alice.key_id) is None
    caller = authoriser.check_key_alive(alice.key_id)
    token, _ = authoriser.upload_upstream(caller)
    assert token.get_secret_value() == TOKENS[0]
    first = len(reads)
    assert first >= 2
    for _ in range(5):  # the next chunks
        assert authoriser.key_alive_from_memory(alice.key_id) == caller
        assert authoriser.upstream_from_memory(caller) == (token, None)
    assert len(reads) == first
    gateway.admin.remove_credential(alice.credential_id, actor="test")
    assert authoriser.upstream_from_memory(caller) is None
    with pytest.raises(CredentialNotFound):
        authoriser.upload_upstream(caller)
    authoriser.check_key_alive(alice.key_id)
    gateway.admin.revoke_key(alice.key_id, actor="test")
    assert authoriser.key_alive_from_memory(alice.key_id) is None
    with pytest.raises(KeyRevoked):
        authoriser.check_key_alive(alice.key_id)


def test_decisions_are_found_by_key_id_through_eviction_and_drops(
    gateway: Gateway, alice: Tenant
) -> None:
    bob = add_tenant(gateway, "bob", TOKENS[1])
    cache = _DecisionCache(ttl=60, max_entries=2)
    a, b = Caller(gateway.keys.get(alice.key_id)), Caller(gateway.keys.get(bob.key_id))
    cache.put(b"alice-1", a, None, None, cache.generation)
    cache.put(b"bob-1", b, SecretStr("tok-b"), None, cache.generation)
    assert cache.caller_for_key(alice.key_id) == a
    assert cache.upstream_for_key(alice.key_id) is None  # no token cached for alice
    assert cache.upstream_for_key(bob.key_id) == (SecretStr("tok-b"), None)
    cache.put(b"alice-2", a, SecretStr("tok-a"), None, cache.generation)  # evicts alice-1
    assert cache.upstream_for_key(alice.key_id) == (SecretStr("tok-a"), None)
    cache.put(b"bob-2", b, None, None, cache.generation)  # evicts bob-1, bob's token with it
    assert cache.upstream_for_key(bob.key_id) is None
    assert cache.caller_for_key(bob.key_id) == b
    cache.drop(key_id=bob.key_id)
    assert cache.caller_for_key(bob.key_id) is None
    assert cache.caller_for_key(alice.key_id) == a
    cache.drop(credential_id=alice.credential_id)
    assert cache.caller_for_key(alice.key_id) is None
    cache.put(b"alice-3", a, None, None, cache.generation - 1)  # a lookup from before a drop
    assert cache.caller_for_key(alice.key_id) is None


def test_removing_a_credential_drops_its_decisions(gateway: Gateway, alice: Tenant) -> None:
    gateway.authoriser.authorise(alice.key, scope="inference")
    gateway.admin.remove_credential(alice.credential_id, actor="test")
    assert gateway.authoriser.authorise_from_memory(alice.key, scope="inference") is None
    with pytest.raises(CredentialNotFound, match="removed"):
        gateway.authoriser.authorise(alice.key, scope="inference")


def test_a_key_state_has_one_answer() -> None:
    now = utcnow()
    key = ApiKey(
        key_id="k",
        name="n",
        owner_id="o",
        credential_id=None,
        scopes=("inference",),
        secret_hash="h",
        hash_scheme="hmac-sha256",
        display_prefix="tpg_k",
        last4="abcd",
        expires_at=now + timedelta(hours=1),
    )
    assert key.state(now) == "active"
    assert key.state(now + timedelta(hours=1)) == "expired"
    from dataclasses import replace

    disabled = replace(key, disabled_at=now)
    assert disabled.state(now) == "disabled"
    assert disabled.state(now + timedelta(hours=2)) == "disabled"
    assert replace(disabled, revoked_at=now).state(now) == "revoked"


def test_keys_answered_from_the_cache_get_their_last_use_written_by_the_flusher(
    tmp_path: Path, fake: FakeTabPFN
) -> None:
    # The cached path only notes a use in memory; before, it reached the database at the
    # key's next slow-path lookup or at shutdown. The usage flusher's thread writes it.
    gw = Gateway.from_settings(
        make_settings(
            tmp_path,
            "memory://",
            usage_flush_seconds=0.05,
            last_used_flush_seconds=0.0,
        ),
        upstream_transport=ASGIBridgeTransport(fake.app),
        async_upstream_transport=httpx.ASGITransport(app=fake.app),
        bus=LocalBus(),
    )
    try:
        tenant = add_tenant(gw, "alice", TOKENS[0])
        gw.authoriser.authorise(tenant.key, scope="inference")  # the slow path, cached now
        gw.keys.flush_last_used()
        first = gw.store.get_key(tenant.key_id)
        assert first is not None
        assert first.last_used_at is not None
        time.sleep(0.01)  # a later use has a later time
        assert gw.authoriser.authorise_from_memory(tenant.key, scope="inference") is not None
        deadline = time.monotonic() + 30
        latest = first.last_used_at
        while latest <= first.last_used_at and time.monotonic() < deadline:
            time.sleep(0.02)
            record = gw.store.get_key(tenant.key_id)
            assert record is not None
            assert record.last_used_at is not None
            latest = record.last_used_at
        assert latest > first.last_used_at
    finally:
        gw.close()
