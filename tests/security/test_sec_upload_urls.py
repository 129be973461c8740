"""Item 10: upload URLs have one spelling, stay out of access logs in every spelling, stop with
the credential they were issued under, and never start with a forged Host."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from security_support import Stack, build_stack
from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX
from tabpfn_gateway.netpolicy import host_allowed
from tabpfn_gateway.protocol.messages import FileInfo, PrepareTrainSetUploadRequest
from tabpfn_gateway_server.logfilter import UploadPathFilter

PARQUET = b"PAR1" + b"\0" * 60


def upload_url(stack: Stack) -> str:
    """One upload URL handed to Alice (the x part of a train set)."""
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet", size_bytes=len(PARQUET)),
        y_train_info=FileInfo(format="parquet", size_bytes=len(PARQUET)),
    )
    answer = stack.http.post(
        "/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers=stack.bearer(stack.alice.key),
    )
    assert answer.status_code == 200, answer.text
    url: str = answer.json()["x_train_info"]["signed_urls"][0]
    return url


def storage_puts(stack: Stack) -> int:
    return len([r for r in stack.fake.requests if r.method == "PUT"])


def test_padded_or_respelled_tokens_are_not_the_same_token(stack: Stack) -> None:
    url = upload_url(stack)
    token = url.rsplit("/", 1)[1]
    # The same bytes, spelled otherwise: padding, a stray character the lenient decoder drops,
    # or a last character differing only in the bits the decoder ignores.
    spellings = [token + "=", token + "==", token + "===", token[:5] + "." + token[5:]]
    ignored_bits = {2: 4, 3: 2}.get(len(token) % 4)
    if ignored_bits is not None:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        index = alphabet.index(token[-1])
        spellings.append(token[:-1] + alphabet[index ^ 1])
        assert (index ^ 1) >> ignored_bits == index >> ignored_bits
    puts = storage_puts(stack)
    for spelling in spellings:
        response = stack.http.put(UPLOAD_PATH_PREFIX + spelling, content=PARQUET)
        assert response.status_code == 400, (spelling[-4:], response.text)
        assert response.json()["error_code"] == "INVALID_UPLOAD"
    assert storage_puts(stack) == puts
    # The canonical spelling still works.
    assert stack.http.put(UPLOAD_PATH_PREFIX + token, content=PARQUET).status_code == 200
    assert storage_puts(stack) == puts + 1


def test_an_upload_url_stops_with_its_credential(stack: Stack) -> None:
    url = upload_url(stack)
    path = url.split("gateway.test", 1)[1]
    puts = storage_puts(stack)
    stack.gateway.remove_credential(stack.alice.credential_id, actor="test")
    response = stack.http.put(path, content=PARQUET)
    assert response.status_code == 404, response.text
    assert response.json()["error_code"] == "CREDENTIAL_NOT_FOUND"
    assert storage_puts(stack) == puts  # nothing streamed upstream


TOKEN = "A" * 40 + "b-_9" * 40


@pytest.mark.parametrize(
    "path",
    [
        f"/gateway/upload/{TOKEN}",
        f"/gateway/upload//{TOKEN}",
        f"//gateway/upload/{TOKEN}",
        f"/gateway//upload/{TOKEN}",
        f"/gateway/upload/{TOKEN}==",
        f"/GATEWAY/Upload/{TOKEN}",
        f"/gateway/uploads/{TOKEN}",
        f"/gateway/upload/{TOKEN}?x=1",
    ],
)
def test_access_log_lines_never_hold_an_upload_token(path: str) -> None:
    # What uvicorn's access logger emits, with its own format and arguments.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "PUT", path, "1.1", 404),
        None,
    )
    assert UploadPathFilter().filter(record)
    line = record.getMessage()
    assert TOKEN[:40] not in line, line
    assert TOKEN[-40:] not in line, line
    assert "[REDACTED]" in line
    assert line.startswith('127.0.0.1:5000 - "PUT /')


def test_a_forged_host_never_becomes_an_upload_url_base(stack: Stack) -> None:
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet"), y_train_info=FileInfo(format="parquet")
    )
    body = request.model_dump(mode="json", exclude_none=True)
    headers = stack.bearer(stack.alice.key)
    prepares = len(stack.fake.requests_to("/tabpfn/prepare_train_set_upload"))
    for forged in ("evil.example", "evil.example:443", "gateway.test.evil.example", "a b", "x@y"):
        response = stack.http.post(
            "/tabpfn/prepare_train_set_upload", json=body, headers={**headers, "Host": forged}
        )
        assert response.status_code == 400, (forged, response.text)
        assert response.json()["error_code"] == "HOST_NOT_ALLOWED"
        assert "evil" not in response.text
    # Refused before anything was asked upstream.
    assert len(stack.fake.requests_to("/tabpfn/prepare_train_set_upload")) == prepares
    # An allowed host (any port) is still the base.
    allowed = stack.http.post(
        "/tabpfn/prepare_train_set_upload",
        json=body,
        headers={**headers, "Host": "gateway.test:8443"},
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["x_train_info"]["signed_urls"][0].startswith(
        "http://gateway.test:8443" + UPLOAD_PATH_PREFIX
    )


def test_public_url_decides_whatever_the_host(tmp_path: Path) -> None:
    for stack in build_stack(
        tmp_path, f"sqlite:///{tmp_path}/g.db", public_url="https://tabpfn.corp.example"
    ):
        response = stack.http.post(
            "/tabpfn/prepare_train_set_upload",
            json=PrepareTrainSetUploadRequest(
                x_train_info=FileInfo(format="parquet"), y_train_info=FileInfo(format="parquet")
            ).model_dump(mode="json", exclude_none=True),
            headers={**stack.bearer(stack.alice.key), "Host": "evil.example"},
        )
        assert response.status_code == 200, response.text
        urls = response.json()["x_train_info"]["signed_urls"]
        assert urls[0].startswith("https://tabpfn.corp.example" + UPLOAD_PATH_PREFIX)


def test_host_allowlist_patterns() -> None:
    allowed = ["gw.corp.example", "*.tabpfn.example", "::1"]
    assert host_allowed("gw.corp.example", allowed)
    assert host_allowed("GW.corp.example.:8000", allowed)
    assert host_allowed("eu.tabpfn.example", allowed)
    assert host_allowed("[::1]:8000", allowed)
    assert not host_allowed("tabpfn.example", allowed)
    assert not host_allowed("gw.corp.example.evil", allowed)
    assert not host_allowed("gw.corp.example@evil", allowed)
    assert not host_allowed("gw.corp.example/x", allowed)
    assert not host_allowed("", allowed)
    assert host_allowed("anything.example", ["*"])
