"""FakeTabPFN as an HTTP server: auth, signed URLs, dedup, ownership, faults, the request log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tabpfn_gateway.protocol.serialization import to_parquet
from tabpfn_gateway.testing.fake import STORAGE_PREFIX, FakeTabPFN
from tabpfn_gateway.testing.fake_server import serve_in_thread
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

BASE = "http://fake.test"


@pytest.fixture
def fake() -> FakeTabPFN:
    return FakeTabPFN(["tok-a", "tok-b"], unverified_tokens=["tok-u"])


@pytest.fixture
def http(fake: FakeTabPFN) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE, transport=ASGIBridgeTransport(fake.app)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def prepare_train(http: httpx.Client, token: str = "tok-a", **extra: Any) -> httpx.Response:
    import pandas as pd

    x_bytes, x_hash = to_parquet(pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0, 1, 0, 1]}))
    y_bytes, y_hash = to_parquet(pd.DataFrame({"y": [0, 1, 0, 1]}))
    body = {
        "x_train_info": {"format": "parquet", "hash": x_hash, "size_bytes": len(x_bytes)},
        "y_train_info": {"format": "parquet", "hash": y_hash, "size_bytes": len(y_bytes)},
        **extra,
    }
    response = http.post("/tabpfn/prepare_train_set_upload", json=body, headers=auth(token))
    response.extensions["payloads"] = (x_bytes, y_bytes)
    return response


def upload_train(http: httpx.Client, prepared: httpx.Response) -> None:
    body = prepared.json()
    for payload, info in zip(
        prepared.extensions["payloads"], [body["x_train_info"], body["y_train_info"]], strict=True
    ):
        answer = http.put(info["signed_urls"][0], content=payload, headers=info["required_headers"])
        assert answer.status_code == 200


def test_root_protected_and_greetings(http: httpx.Client) -> None:
    assert http.get("/").status_code == 200
    assert http.get("/protected/").status_code == 401
    assert http.get("/protected/", headers=auth("tok-nope")).status_code == 401
    assert http.get("/protected/", headers=auth("tok-u")).status_code == 403
    assert http.get("/protected/", headers=auth("tok-a")).status_code == 200
    greeting = http.get("/retrieve_greeting_messages/", headers=auth("tok-a"))
    assert greeting.json() == {"messages": []}


def test_settings_fit_the_vendor_schema(http: httpx.Client) -> None:
    from tabpfn_gateway.protocol.messages import GetSettingsResponse

    settings = GetSettingsResponse.model_validate(http.get("/tabpfn/get_settings").json())
    assert settings.async_settings.use_above_trainset_size_bytes == 50 * 1024 * 1024
    assert settings.max_model_limit.max_classes == 10


def test_signed_urls_refuse_tampering_expiry_and_missing_headers(
    fake: FakeTabPFN, http: httpx.Client
) -> None:
    prepared = prepare_train(http)
    info = prepared.json()["x_train_info"]
    url, headers = info["signed_urls"][0], info["required_headers"]
    tampered = url.replace("sig=", "sig=0")
    assert http.put(tampered, content=b"x", headers=headers).status_code == 403
    assert http.put(url.split("?")[0], content=b"x", headers=headers).status_code == 403
    assert http.put(url, content=b"x").status_code == 400  # required headers missing
    other_chunk = url.replace("/x_train/0?", "/x_train/7?")
    assert http.put(other_chunk, content=b"x", headers=headers).status_code == 403

    fake.upload_url_ttl = -1  # every URL handed out from now on is already expired
    expired = prepare_train(http, force_reupload=True).json()["x_train_info"]
    answer = http.put(
        expired["signed_urls"][0],
        content=b"x",
        headers=headers
        | {"X-Goog-Meta-Fake-Upload-Id": expired["required_headers"]["X-Goog-Meta-Fake-Upload-Id"]},
    )
    assert answer.status_code == 403
    assert "expired" in answer.json()["message"]


def test_dedup_is_per_token_and_only_for_complete_uploads(http: httpx.Client) -> None:
    first = prepare_train(http)
    assert first.status_code == 200
    assert prepare_train(http).status_code == 200  # not uploaded yet: nothing to reuse
    upload_train(http, first)
    duplicate = prepare_train(http)
    assert duplicate.status_code == 409
    assert duplicate.json()["train_set_upload_id"] == first.json()["train_set_upload_id"]
    assert duplicate.json()["error_code"] == "DUPLICATE_TRAIN_SET_UPLOAD"
    assert prepare_train(http, token="tok-b").status_code == 200  # another account
    assert prepare_train(http, force_reupload=True).status_code == 200


def test_fits_and_uploads_belong_to_their_token(http: httpx.Client) -> None:
    prepared = prepare_train(http)
    upload_train(http, prepared)
    fit_body = {
        "train_set_upload_id": prepared.json()["train_set_upload_id"],
        "task_config": {"task": "classification"},
    }
    assert http.post("/tabpfn/fit", json=fit_body, headers=auth("tok-b")).status_code == 404
    fitted = http.post("/tabpfn/fit", json=fit_body, headers=auth("tok-a"))
    assert fitted.status_code == 200
    assert fitted.json()["status"] == "completed"
    status = {"fitted_train_set_id": fitted.json()["fitted_train_set_id"]}
    assert (
        http.post("/tabpfn/get_fit_status", json=status, headers=auth("tok-b")).status_code == 404
    )
    mine = http.post("/tabpfn/get_fit_status", json=status, headers=auth("tok-a"))
    assert mine.json()["status"] == "completed"


def test_an_incomplete_upload_cannot_be_fitted(http: httpx.Client) -> None:
    prepared = prepare_train(http)
    fit_body = {
        "train_set_upload_id": prepared.json()["train_set_upload_id"],
        "task_config": {"task": "classification"},
    }
    answer = http.post("/tabpfn/fit", json=fit_body, headers=auth("tok-a"))
    assert answer.status_code == 400
    assert "not complete" in answer.json()["message"]


def test_bodies_that_do_not_fit_the_schema_are_422(http: httpx.Client) -> None:
    answer = http.post(
        "/tabpfn/prepare_train_set_upload", json={"x_train_info": {}}, headers=auth("tok-a")
    )
    assert answer.status_code == 422
    assert answer.json()["detail"]


def test_fault_knobs(fake: FakeTabPFN, http: httpx.Client) -> None:
    fake.fail_next(2, status=500, path="/protected/")
    statuses = [http.get("/protected/", headers=auth("tok-a")).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert http.get("/").status_code == 200  # path-scoped: other paths unaffected
    fake.fail_next(1, status=429, retry_after=4)
    limited = http.get("/")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "4"
    fake.drop_next(1)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get("/")
    assert fake.requests[-1].status == 0
    fake.error_rate = 1.0
    assert http.get("/").status_code == 503
    fake.error_rate = 0.0
    fake.latency = 0.01
    assert http.get("/").status_code == 200


def test_a_dropped_connection_is_a_real_drop_on_loopback(fake: FakeTabPFN) -> None:
    with serve_in_thread(fake.app) as url:
        fake.drop_next(1, path="/")
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url + "/")
        assert httpx.get(url + "/").status_code == 200


def test_error_rate_is_reproducible_with_a_seed() -> None:
    def pattern() -> list[int]:
        fake = FakeTabPFN(["t"], error_rate=0.5, seed=42)
        with httpx.Client(base_url=BASE, transport=ASGIBridgeTransport(fake.app)) as http:
            return [http.get("/").status_code for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert set(first) == {200, 503}


def test_the_request_log_is_thread_safe(fake: FakeTabPFN, http: httpx.Client) -> None:
    def hammer(token: str) -> None:
        for _ in range(25):
            http.get("/protected/", headers=auth(token))

    threads = [
        threading.Thread(target=hammer, args=(f"tok-{(i % 2 and 'a') or 'b'}",)) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = fake.requests
    assert len(log) == 200
    assert {r.token for r in log} == {"tok-a", "tok-b"}
    assert sum(r.token == "tok-a" for r in log) == 100
    fake.clear_log()
    assert fake.requests == []


def test_usage_and_estimates(fake: FakeTabPFN, http: httpx.Client) -> None:
    usage = http.post("/get_api_usage/", headers=auth("tok-a")).json()
    assert usage["current_usage"] == 0
    assert usage["usage_limit"] == -1
    fake.add_token("tok-limited", limit=50)
    fake.set_usage("tok-limited", 50)
    limited = http.post("/get_api_usage/", headers=auth("tok-limited")).json()
    assert limited["current_usage"] == limited["usage_limit"] == 50
    refused = prepare_train(http, token="tok-limited")
    assert refused.status_code == 200  # preparing an upload costs nothing
    quote = http.post(
        "/tabpfn/estimate_cost",
        json={"train_rows": 10, "raw_columns": 2},
        headers=auth("tok-a"),
    ).json()
    assert quote["estimated_cost"] == 20
    assert quote["inputs"]["operation"] == "predict"


def test_repr_does_not_list_tokens(fake: FakeTabPFN) -> None:
    assert "tok-a" not in repr(fake)


def test_storage_ignores_the_bearer_but_logs_it(fake: FakeTabPFN, http: httpx.Client) -> None:
    # tabpfn-client sends its token to signed URLs; the fake accepts that (as the vendor's
    # storage does) and records it, which is how the fidelity tests can show the difference.
    prepared = prepare_train(http)
    info = prepared.json()["x_train_info"]
    answer = http.put(
        info["signed_urls"][0],
        content=prepared.extensions["payloads"][0],
        headers=info["required_headers"] | auth("tok-a"),
    )
    assert answer.status_code == 200
    assert fake.requests_to(STORAGE_PREFIX)[-1].token == "tok-a"
    assert time.time() < prepared.json()["x_train_info"]["expires_at"]


def test_the_request_log_keeps_what_it_is_told() -> None:
    # A served fake keeps none (nobody reads it, and it grew without end); tests keep all.
    every = ["/", "/protected/", "/tabpfn/get_settings"]
    for keep, expected in ((None, every), (2, every[1:]), (0, [])):
        fake = FakeTabPFN(tokens=["tok-a"], keep_requests=keep)
        with httpx.Client(transport=ASGIBridgeTransport(fake.app), base_url=BASE) as http:
            http.get("/")
            http.get("/protected/", headers=auth("tok-a"))
            assert http.get("/tabpfn/get_settings", headers=auth("tok-a")).status_code == 200
        assert [r.path for r in fake.requests] == expected
    with pytest.raises(ValueError, match="keep_requests"):
        FakeTabPFN(tokens=["tok-a"], keep_requests=-1)


def test_the_served_fakes_keep_no_request_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from tabpfn_gateway import cli
    from tabpfn_gateway.cli import fake as fake_cli
    from tabpfn_gateway.testing import fake, fake_hosted

    kept: list[int | None] = []

    class Cloud(FakeTabPFN):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kept.append(kwargs.get("keep_requests"))

    class Hosted(fake_hosted.FakeHostedTabPFN):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            kept.append(kwargs.get("keep_requests"))

    monkeypatch.setattr(fake, "FakeTabPFN", Cloud)
    monkeypatch.setattr(fake_hosted, "FakeHostedTabPFN", Hosted)
    monkeypatch.setattr(fake_cli, "_run", lambda uvicorn, app, sock, args: sock.close())
    assert cli.main(["fake-upstream", "--port", "0", "--token", "tok-a"]) == 0
    assert cli.main(["fake-upstream", "--port", "0", "--hosted"]) == 0
    assert kept == [0, 0]
