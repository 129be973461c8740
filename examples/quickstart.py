"""Quickstart: GatewayClassifier and GatewayRegressor, the scikit-learn way.

Runs offline as is: with no TABPFN_GATEWAY_URL set, the estimators use
``tabpfn_gateway.testing.local_gateway()``, an in-process gateway over FakeTabPFN (real
scikit-learn models standing in for TabPFN). Against your team's gateway:

    export TABPFN_GATEWAY_URL=https://tabpfn-gateway.example.com
    python -c "import tabpfn_gateway; tabpfn_gateway.login('https://tabpfn-gateway.example.com')"
    python examples/quickstart.py

(or set TABPFN_GATEWAY_API_KEY instead of logging in).
"""

from __future__ import annotations

import os

from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split

from tabpfn_gateway import GatewayClassifier, GatewayRegressor
from tabpfn_gateway.testing import local_gateway


def main() -> None:
    if os.environ.get("TABPFN_GATEWAY_URL"):
        backend = None  # HTTP to TABPFN_GATEWAY_URL, key from the env or the keyring
    else:
        backend = local_gateway()
        print("No TABPFN_GATEWAY_URL: using an offline in-process gateway (FakeTabPFN).")

    # Classification: pandas in, labels out, probabilities per class.
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=0)
    clf = GatewayClassifier(backend=backend, n_estimators=4)
    clf.fit(X_train, y_train)
    accuracy = accuracy_score(y_test, clf.predict(X_test))
    print(f"classifier accuracy: {accuracy:.3f}")
    print(f"probabilities of the first test row: {clf.predict_proba(X_test[:1]).round(3)}")

    # Regression: the mean by default, or quantiles of the predictive distribution.
    Xr, yr = load_diabetes(return_X_y=True)
    Xr_train, Xr_test, yr_train, yr_test = train_test_split(Xr, yr, random_state=0)
    reg = GatewayRegressor(backend=backend).fit(Xr_train, yr_train)
    print(f"regressor R^2: {r2_score(yr_test, reg.predict(Xr_test)):.3f}")
    low, high = reg.predict(Xr_test[:3], output_type="quantiles", quantiles=[0.1, 0.9])
    for lo, hi in zip(low, high, strict=True):
        print(f"80% interval: [{lo:.1f}, {hi:.1f}]")

    if backend is not None:
        for summary in backend.usage():
            print(f"usage recorded: {summary.operation} x{summary.calls}")
        backend.close()


if __name__ == "__main__":
    main()
