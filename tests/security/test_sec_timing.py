"""An unknown key id and a known one with a wrong secret do the same work (counted, not timed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tabpfn_gateway.errors import InvalidKey
from tabpfn_gateway.keys import KeyManager, hashing
from tabpfn_gateway.keys.format import format_key, new_key_id, new_secret
from tabpfn_gateway.store import Store, open_store
from tabpfn_gateway.store.records import Principal, UpstreamCredential, new_id, utcnow

PEPPER = b"timing-pepper-0123456789abcdef01"
OLD_PEPPER = b"timing-old-pepper-0123456789abcd"


class Counting:
    """Wraps a store and counts its calls by name (the database work of one verify)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts hash comparisons and the HMACs computed for them."""
    counts: Counter[str] = Counter()
    verify, hmac_hex = hashing.KeyHasher.verify, hashing._hmac_hex

    def counted_verify(self: Any, *args: Any) -> Any:
        counts["verify"] += 1
        return verify(self, *args)

    def counted_hmac(*args: Any) -> str:
        counts["hmac"] += 1
        return hmac_hex(*args)

    monkeypatch.setattr(hashing.KeyHasher, "verify", counted_verify)
    monkeypatch.setattr(hashing, "_hmac_hex", counted_hmac)
    return counts


@pytest.fixture
def store() -> Iterator[Counting]:
    inner = open_store(url="memory://")
    owner = inner.add_principal(Principal(id=new_id(), name="alice", created_at=utcnow()))
    inner.add_credential(
        UpstreamCredential(
            id="cred-1",
            owner_id=owner.id,
            label="main",
            encrypted_token=b"opaque",
            created_at=utcnow(),
        )
    )
    yield Counting(inner)
    inner.close()


def cost(manager: KeyManager, key: str, work: Counter[str], store: Counting) -> Counter[str]:
    """The work one refused verify did: comparisons, HMACs and store calls."""
    work.clear()
    store.calls.clear()
    with pytest.raises(InvalidKey):
        manager.verify(key)
    return Counter({**work, **{f"store.{name}": n for name, n in store.calls.items()}})


@pytest.mark.parametrize("previous_peppers", [(), (OLD_PEPPER,)])
def test_unknown_id_and_wrong_secret_cost_the_same(
    store: Counting, work: Counter[str], previous_peppers: tuple[bytes, ...]
) -> None:
    manager = KeyManager(
        store,  # type: ignore[arg-type]
        pepper=PEPPER,
        previous_peppers=previous_peppers,
        cache_ttl=0,
    )
    owner = store.inner.list_principals().items[0]
    plain = manager.create(owner.id, "cred-1", "plain")
    rotated = manager.create(owner.id, "cred-1", "rotated")
    manager.rotate(rotated.record.key_id, grace=timedelta(hours=1))
    manager.verify(plain.plaintext)  # the lazily made dummy hash exists from here on
    cost(manager, format_key(new_key_id(), new_secret()), work, store)

    unknown = cost(manager, format_key(new_key_id(), new_secret()), work, store)
    wrong = cost(manager, format_key(plain.record.key_id, new_secret()), work, store)
    # A key inside a rotation's grace window has two real hashes to compare against.
    wrong_in_rotation = cost(manager, format_key(rotated.record.key_id, new_secret()), work, store)

    assert unknown == wrong == wrong_in_rotation
    assert unknown["verify"] == 2
    assert unknown["hmac"] == 2 * (1 + len(previous_peppers))
    assert unknown["store.get_key"] == 1
