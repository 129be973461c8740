"""Item 5: upload ids belong to the principal that prepared them (shared TabPFN token)."""

from __future__ import annotations

from sklearn.datasets import make_classification

from gateway_support import add_tenant
from security_support import GATEWAY_URL, Stack
from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
)
from tabpfn_gateway.testing.transport import ASGIBridgeTransport

PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))


def test_another_principal_cannot_fit_or_predict_on_my_uploads(stack: Stack) -> None:
    # Carol's credential holds the same TabPFN token as Alice's: the upstream cannot tell them
    # apart, so the gateway must.
    carol = add_tenant(stack.gateway, "carol", stack.alice.token)
    X, y = make_classification(n_samples=120, n_features=4, random_state=3)

    def sdk(key: str) -> ProtocolClient:
        return ProtocolClient(GATEWAY_URL, key, transport=ASGIBridgeTransport(stack.app))

    with sdk(stack.alice.key) as alice:
        fit = alice.fit(X, y, ClassifierFitTaskConfig())
        alice.predict(fit.fitted_train_set_id, X[:4], PROBAS)
    train_upload = stack.fake.requests_to("/tabpfn/fit")[-1].json["train_set_upload_id"]  # type: ignore[index]
    test_upload = stack.fake.requests_to("/tabpfn/predict")[-1].json["test_set_upload_id"]  # type: ignore[index]
    with sdk(carol.key) as own:
        carols_fit = own.fit(X[::2], y[::2], ClassifierFitTaskConfig()).fitted_train_set_id
    fits_before = len(stack.fake.requests_to("/tabpfn/fit"))
    carol_key = stack.bearer(carol.key)
    task = ClassifierFitTaskConfig().model_dump(mode="json", exclude_none=True)
    for path in ("/tabpfn/fit", "/tabpfn/submit_fit_job"):
        response = stack.http.post(
            path, json={"train_set_upload_id": train_upload, "task_config": task}, headers=carol_key
        )
        assert response.status_code == 404, response.text
    predict = stack.http.post(
        "/tabpfn/predict",
        json={
            "test_set_upload_id": test_upload,
            "fitted_train_set_id": str(carols_fit),
            "task_config": PROBAS.model_dump(mode="json", exclude_none=True),
        },
        headers=carol_key,
    )
    assert predict.status_code == 404, predict.text
    # Unknown ids get the same answer (no oracle), and nothing reached the upstream.
    unknown = stack.http.post(
        "/tabpfn/fit",
        json={"train_set_upload_id": "00000000-0000-4000-8000-000000000000", "task_config": task},
        headers=carol_key,
    )
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == predict.json()["error_code"]
    assert len(stack.fake.requests_to("/tabpfn/fit")) == fits_before


def test_a_principal_sending_the_same_data_may_use_the_upstreams_duplicate(stack: Stack) -> None:
    # Two members of a team on one shared TabPFN token upload the same data: the upstream
    # answers the second prepare with the first upload's id (dedup, 409). The second principal
    # sent that content itself, so it may fit on the id; a refusal here broke shared tokens.
    carol = add_tenant(stack.gateway, "carol", stack.alice.token)
    X, y = make_classification(n_samples=90, n_features=5, random_state=8)

    def sdk(key: str) -> ProtocolClient:
        return ProtocolClient(GATEWAY_URL, key, transport=ASGIBridgeTransport(stack.app))

    with sdk(stack.alice.key) as alice:
        alice.fit(X, y, ClassifierFitTaskConfig())
    alices_upload = stack.fake.requests_to("/tabpfn/fit")[-1].json["train_set_upload_id"]  # type: ignore[index]
    with sdk(carol.key) as own:
        fit = own.fit(X, y, ClassifierFitTaskConfig())
        proba = own.predict(fit.fitted_train_set_id, X[:3], PROBAS)
    carols_upload = stack.fake.requests_to("/tabpfn/fit")[-1].json["train_set_upload_id"]  # type: ignore[index]
    assert carols_upload == alices_upload  # the duplicate path was taken
    assert proba is not None
