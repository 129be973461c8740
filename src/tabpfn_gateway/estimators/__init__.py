"""scikit-learn estimators for TabPFN through a gateway, and the backends they send calls to."""

from __future__ import annotations

from tabpfn_gateway.estimators.backends import (
    Backend,
    DetachedInProcessBackend,
    HTTPBackend,
    InProcessBackend,
)
from tabpfn_gateway.estimators.classifier import GatewayClassifier
from tabpfn_gateway.estimators.regressor import GatewayRegressor

__all__ = [
    "Backend",
    "DetachedInProcessBackend",
    "GatewayClassifier",
    "GatewayRegressor",
    "HTTPBackend",
    "InProcessBackend",
]
