"""The vendored wire schemas stay equal to tabpfn-client's; serialization matches the vendor's."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

# tabpfn-client is a core dependency (the peer we test against): imported, never skipped.
import tabpfn_client.api_models as vendor_models
import tabpfn_client.client as vendor_client
from pydantic import BaseModel, TypeAdapter

import tabpfn_gateway.protocol as protocol
from tabpfn_gateway.protocol import messages
from tabpfn_gateway.protocol.serialization import crc32c_b64, split_chunks, to_parquet


def _vendor_model_names() -> list[str]:
    return sorted(
        name
        for name, value in vars(vendor_models).items()
        if inspect.isclass(value)
        and issubclass(value, BaseModel)
        and value.__module__ == vendor_models.__name__
    )


def test_every_vendor_model_is_vendored() -> None:
    names = _vendor_model_names()
    assert len(names) > 30  # the generated module has ~40 models: a guard against a bad scan
    missing = [name for name in names if not hasattr(messages, name)]
    assert missing == []


@pytest.mark.parametrize("name", _vendor_model_names())
def test_vendored_model_schema_equals_vendor(name: str) -> None:
    ours = getattr(messages, name)
    theirs = getattr(vendor_models, name)
    assert ours.model_json_schema() == theirs.model_json_schema()
    assert ours.model_json_schema(mode="serialization") == theirs.model_json_schema(
        mode="serialization"
    )


@pytest.mark.parametrize(
    "name", ["Prediction", "FitTaskConfig", "Metadata", "TaskConfig", "TabPFNSystem"]
)
def test_vendored_type_aliases_equal_vendor(name: str) -> None:
    ours = TypeAdapter(getattr(messages, name)).json_schema()
    theirs = TypeAdapter(getattr(vendor_models, name)).json_schema()
    assert ours == theirs


@pytest.mark.parametrize(
    "name",
    ["ClassifierOutputType", "RegressorOutputType", "FitStatus", "ModelVersion", "FitMode"],
)
def test_vendored_enums_equal_vendor(name: str) -> None:
    ours = [(m.name, m.value) for m in getattr(messages, name)]
    theirs = [(m.name, m.value) for m in getattr(vendor_models, name)]
    assert ours == theirs


def test_our_download_uri_model_mirrors_the_vendors_inline_one() -> None:
    ours = messages.PredictResponseWithDownloadURI.model_json_schema()
    theirs = vendor_client.PredictResponseWithDownloadURI.model_json_schema()
    # Fields and types equal; only the docstring (the schema's description) is ours.
    ours.pop("description")
    theirs.pop("description")
    assert ours == theirs


def test_unknown_enum_values_flow_through_like_the_vendors() -> None:
    body = {"fitted_train_set_id": "5b0c6a3e-6f55-4b8b-8f87-2d2f5c1e8c11", "status": "queued"}
    ours = messages.GetFitStatusResponse.model_validate(body)
    theirs = vendor_models.GetFitStatusResponse.model_validate(body)
    assert ours.status == theirs.status == "queued"
    assert isinstance(ours.status, messages.UnknownEnum)


def test_importing_the_protocol_does_not_import_tabpfn_client() -> None:
    # The point of vendoring: tabpfn_client's import pulls in its estimators and global client.
    code = (
        "import sys, tabpfn_gateway.protocol, tabpfn_gateway.testing.fake\n"
        "print(sorted(m for m in sys.modules if m.startswith('tabpfn_client')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_public_facade() -> None:
    assert sorted(protocol.__all__) == protocol.__all__
    for name in protocol.__all__:
        assert getattr(protocol, name) is not None


def _frames() -> list[pd.DataFrame]:
    rng = np.random.default_rng(0)
    numeric = pd.DataFrame(rng.normal(size=(50, 4)))
    mixed = pd.DataFrame(
        {
            "a": rng.normal(size=30),
            "b": ["x", "y", None] * 10,
            "c": pd.Series([1, None, 3] * 10, dtype="Int64"),
        }
    )
    return [numeric, mixed, pd.DataFrame(np.arange(10))]


@pytest.mark.parametrize("frame", _frames())
def test_to_parquet_is_byte_identical_to_the_vendor(frame: pd.DataFrame) -> None:
    # Same bytes, same hash: an upload by either client dedups against the other's.
    assert to_parquet(frame) == vendor_client._serialize_to_parquet(frame)
    assert pd.read_parquet(__import__("io").BytesIO(to_parquet(frame)[0])).shape == frame.shape


def test_crc32c_matches_the_reference_value() -> None:
    # CRC-32C of "123456789" is 0xE3069283 (RFC 3720 check value), base64 of big-endian bytes.
    assert crc32c_b64(b"123456789") == "4waSgw=="
    assert crc32c_b64(b"abc") == vendor_client._get_crc32c_hash(b"abc")


@pytest.mark.parametrize(("size", "parts"), [(10, 1), (10, 3), (7, 7), (1000, 8)])
def test_split_chunks_reassembles_and_matches_the_vendor_split(size: int, parts: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    chunks = split_chunks(data, parts)
    assert len(chunks) == parts
    assert b"".join(bytes(c) for c in chunks) == data
    step = size // parts
    assert [len(c) for c in chunks[:-1]] == [step] * (parts - 1)


def test_split_chunks_rejects_zero_parts() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_chunks(b"abc", 0)
