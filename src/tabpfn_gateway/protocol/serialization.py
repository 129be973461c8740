"""Dataset serialization as the vendor does it: zstd Parquet, CRC32C (base64) for dedup, chunks."""

from __future__ import annotations

import base64
import io
import struct
from typing import TYPE_CHECKING

import google_crc32c

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["crc32c_b64", "parquet_shape", "split_chunks", "to_parquet"]


def crc32c_b64(data: bytes) -> str:
    """The CRC32C of ``data``, big-endian, base64: the ``hash`` the upstream dedups on."""
    return base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode("ascii")


def to_parquet(df: pd.DataFrame) -> tuple[bytes, str]:
    """``df`` as zstd Parquet bytes (no index) and their base64 CRC32C, like ``tabpfn-client``.

    Byte-identical to the vendor's ``_serialize_to_parquet`` for the same frame, so a dataset
    uploaded by either client dedups against the other's.
    """
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False, compression="zstd")
    data = buffer.getvalue()
    return data, crc32c_b64(data)


def split_chunks(data: bytes, parts: int) -> list[bytes | memoryview]:
    """Split ``data`` into ``parts`` consecutive chunks, the last one taking the remainder.

    The same split as the vendor's, so the upstream reassembles what either client sent.
    One part is ``data`` itself; several are views, not copies, so a 1 GB upload is not held
    twice (each view is copied only while its PUT is in flight).
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    if parts == 1:
        return [data]
    view = memoryview(data)
    size = len(data) // parts
    return [view[i * size : (i + 1) * size if i < parts - 1 else len(data)] for i in range(parts)]


def parquet_shape(tail: bytes) -> tuple[int, int | None]:
    """Rows and columns from the footer at the end of a Parquet file (``tail``: its last bytes,
    footer included); ``(0, None)`` if unreadable, since metering must never fail a call."""
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        return 0, None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(pa.BufferReader(b"PAR1" + tail))
        return int(metadata.num_rows), int(metadata.num_columns)
    except Exception:  # a truncated or foreign footer
        return 0, None
