"""Sealed upload URLs: round trips, tampering, expiry, secret rotation; nothing readable. And
the body an upload streams: X's Parquet footer read as it ends."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from tabpfn_gateway.errors import ConfigurationError, InvalidUpload
from tabpfn_gateway.gateway import UploadSigner
from tabpfn_gateway.gateway._proxy import _CountingBody

UPSTREAM = "https://storage.example/bucket/obj?X-Goog-Signature=abcdef0123456789"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def seal(signer: UploadSigner, **overrides: object) -> tuple[str, float]:
    fields: dict[str, object] = {
        "upstream_url": UPSTREAM,
        "upstream_headers": {"Content-Type": "application/octet-stream", "x-extra": "1"},
        "key_id": "k1",
        "owner_id": "o1",
        "credential_id": "c1",
        "dataset": "x_train",
    }
    fields.update(overrides)
    return signer.seal(**fields)  # type: ignore[arg-type]


def test_round_trip_carries_everything_and_hides_the_upstream_url() -> None:
    clock = Clock()
    signer = UploadSigner([b"secret-one"], ttl_seconds=60, clock=clock)
    token, expires_at = seal(signer)
    assert expires_at == clock.now + 60
    grant = signer.open(token)
    assert grant.upstream_url == UPSTREAM
    assert dict(grant.upstream_headers)["x-extra"] == "1"
    assert (grant.key_id, grant.owner_id, grant.credential_id, grant.dataset) == (
        "k1",
        "o1",
        "c1",
        "x_train",
    )
    # Sealed, not merely signed: the upstream URL cannot be read out of the token.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"storage.example" not in raw
    assert b"X-Goog" not in raw
    assert "storage.example" not in repr(grant)
    assert "secret-one" not in repr(signer)


def test_upstream_expiry_sooner_than_the_ttl_wins() -> None:
    clock = Clock()
    signer = UploadSigner([b"s"], ttl_seconds=3600, clock=clock)
    _, expires_at = seal(signer, upstream_expires_at=clock.now + 10)
    assert expires_at == clock.now + 10


def test_expired_token_is_refused() -> None:
    clock = Clock()
    signer = UploadSigner([b"s"], ttl_seconds=60, clock=clock)
    token, _ = seal(signer)
    clock.now += 60
    with pytest.raises(InvalidUpload, match="expired"):
        signer.open(token)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # flipped ciphertext
        lambda t: t[:10],  # truncated
        lambda t: "",  # empty
        lambda t: "not*base64!",  # not base64url
        lambda t: "Ag" + t[2:],  # wrong version byte
    ],
)
def test_tampered_tokens_are_refused_alike(mangle: object) -> None:
    signer = UploadSigner([b"s"], ttl_seconds=60)
    token, _ = seal(signer)
    with pytest.raises(InvalidUpload) as info:
        signer.open(mangle(token))  # type: ignore[operator]
    assert info.value.message == InvalidUpload.default_message


def test_foreign_secret_cannot_open_but_rotation_keeps_old_tokens_valid() -> None:
    old = UploadSigner([b"old-secret"], ttl_seconds=60)
    token, _ = seal(old)
    with pytest.raises(InvalidUpload):
        UploadSigner([b"other-secret"], ttl_seconds=60).open(token)
    rotated = UploadSigner([b"new-secret", b"old-secret"], ttl_seconds=60)
    assert rotated.open(token).upstream_url == UPSTREAM
    # New tokens are sealed with the first secret only.
    new_token, _ = seal(rotated)
    with pytest.raises(InvalidUpload):
        old.open(new_token)


def test_a_signer_needs_a_secret() -> None:
    with pytest.raises(ConfigurationError):
        UploadSigner([])


def _parquet(rows: int, columns: int) -> bytes:
    import io

    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(np.arange(rows * columns, dtype=float).reshape(rows, columns))
    buffer = io.BytesIO()
    frame.rename(columns=str).to_parquet(buffer)
    return buffer.getvalue()


async def _chunks(data: bytes, parts: int) -> AsyncIterator[bytes]:
    size = len(data) // parts + 1
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.anyio
async def test_an_x_footer_is_read_as_its_body_ends_not_after_storage_answers() -> None:
    # The shape is read when the sender asks past the last chunk (the storage is taking it
    # in meanwhile), so the upload's answer does not wait for pyarrow.
    data = _parquet(30, 4)
    counted = _CountingBody(_chunks(data, 3), limit=len(data))
    counted.keep_tail = True
    sent = []
    async for chunk in counted.iterate():
        assert counted.shape is None  # nothing is parsed while chunks still flow
        sent.append(chunk)
    assert b"".join(sent) == data
    assert counted.shape == (30, 4)
    assert counted.read_shape() == (30, 4)


@pytest.mark.anyio
async def test_an_x_footer_is_read_even_if_storage_answers_before_the_body_resumes() -> None:
    # aiohttp may hand back the storage's answer while its writer has not yet asked past the
    # last chunk: the kept tail is complete, and the shape is read from it then.
    data = _parquet(25, 3)
    counted = _CountingBody(_chunks(data, 4), limit=len(data))
    counted.keep_tail = True
    iterator = counted.iterate()
    sent = b""
    while len(sent) < len(data):
        sent += await iterator.__anext__()
    assert counted.shape is None
    assert counted.read_shape() == (25, 3)
    await iterator.aclose()


@pytest.mark.anyio
async def test_a_y_upload_keeps_no_tail_and_reads_no_footer() -> None:
    data = _parquet(10, 1)
    counted = _CountingBody(_chunks(data, 2), limit=len(data))
    sent = [chunk async for chunk in counted.iterate()]
    assert b"".join(sent) == data
    assert counted.tail == bytearray()
    assert counted.shape is None
