"""GatewayClassifier: TabPFN classification through a gateway, as a scikit-learn estimator."""

from __future__ import annotations

import inspect
import textwrap
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from tabpfn_gateway.errors import InvalidData, MalformedResponse
from tabpfn_gateway.estimators._base import (
    _SHARED_TABPFN_PARAMS,
    SHARED_PARAMETER_DOCS,
    GatewayEstimatorBase,
    restore_on_error,
)
from tabpfn_gateway.estimators._data import check_target, prepare_features

if TYPE_CHECKING:
    from pydantic import SecretStr
    from sklearn.utils import Tags

    from tabpfn_gateway.estimators.backends import Backend

__all__ = ["GatewayClassifier"]


class GatewayClassifier(ClassifierMixin, GatewayEstimatorBase):  # type: ignore[misc]
    """TabPFN classifier reached through a tabpfn-gateway, with your own gateway key.

    Takes the parameters of ``tabpfn_client.TabPFNClassifier`` (same names, same
    defaults) plus where to send calls (``base_url``, ``api_key``, ``timeout``,
    ``backend``) and ``progress``. There is no process-global token: each estimator
    carries its own backend, so estimators with different keys run side by side.

    Numpy arrays and pandas DataFrames are accepted; NaN, string and categorical columns
    are handled by TabPFN (a DataFrame is sent as a DataFrame). Test sets larger than the
    upstream allows in one call are predicted in batches and joined.

    Parameters
    ----------
    {shared_parameters}
    balance_probabilities : bool, default=False
        Re-weight probabilities by the training class frequencies (helps with
        imbalanced classes).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels seen in ``fit``, sorted.

    n_features_in_ : int
        Number of features seen during :term:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    model_id_ : str
        The upstream's id of the fitted train set (``fitted_train_set_id``). Predictions
        work while the gateway and the upstream keep it.

    fit_timings_ : dict or None
        Seconds the upstream spent on the fit, per stage, when it reports them.

    tabpfn_config_ : ClassifierTabPFNConfig
        The TabPFN configuration sent at fit time and reused by every prediction.

    See Also
    --------
    GatewayRegressor : The regression counterpart.
    tabpfn_gateway.testing.local_gateway : An offline backend for tests.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from tabpfn_gateway import GatewayClassifier
    >>> from tabpfn_gateway.testing import local_gateway
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = GatewayClassifier(backend=local_gateway()).fit(X, y)
    >>> clf.predict(X[:3])
    array([0, 0, 0])
    """

    _task: ClassVar[str] = "classification"
    _tabpfn_params: ClassVar[tuple[str, ...]] = (*_SHARED_TABPFN_PARAMS, "balance_probabilities")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **GatewayEstimatorBase._parameter_constraints,
        "balance_probabilities": ["boolean"],
    }

    def __init__(
        self,
        model_path: str | None = None,
        n_estimators: int | None = None,
        softmax_temperature: float | None = None,
        balance_probabilities: bool = False,
        average_before_softmax: bool | None = None,
        ignore_pretraining_limits: bool = False,
        inference_precision: str | None = None,
        random_state: Any = 0,
        inference_config: dict[str, Any] | None = None,
        categorical_features_indices: list[int] | None = None,
        fit_mode: str | None = None,
        paper_version: bool = False,
        thinking_mode: bool = False,
        thinking_effort: str | None = None,
        thinking_timeout_s: float | None = None,
        thinking_metric: str | None = None,
        group_col: str | list[str] | None = None,
        time_col: str | None = None,
        group_time_col: str | None = None,
        api_mode: str = "auto",
        text_handling: str = "advanced",
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        timeout: float = 900.0,
        backend: Backend | None = None,
        progress: bool = True,
    ) -> None:
        self.model_path = model_path
        self.n_estimators = n_estimators
        self.softmax_temperature = softmax_temperature
        self.balance_probabilities = balance_probabilities
        self.average_before_softmax = average_before_softmax
        self.ignore_pretraining_limits = ignore_pretraining_limits
        self.inference_precision = inference_precision
        self.random_state = random_state
        self.inference_config = inference_config
        self.categorical_features_indices = categorical_features_indices
        self.fit_mode = fit_mode
        self.paper_version = paper_version
        self.thinking_mode = thinking_mode
        self.thinking_effort = thinking_effort
        self.thinking_timeout_s = thinking_timeout_s
        self.thinking_metric = thinking_metric
        self.group_col = group_col
        self.time_col = time_col
        self.group_time_col = group_time_col
        self.api_mode = api_mode
        self.text_handling = text_handling
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.backend = backend
        self.progress = progress

    def fit(self, X: Any, y: Any, description: str | None = None) -> GatewayClassifier:  # noqa: N803
        """Fit TabPFN on ``(X, y)`` upstream; the training data is uploaded once.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Training features. NaN, strings and categorical columns are allowed.

        y : array-like of shape (n_samples,)
            Class labels (any hashable, sortable type: ints, strings, bools).

        description : str or None, default=None
            A label the upstream stores with the training set.

        Returns
        -------
        self : GatewayClassifier
            The fitted estimator.
        """
        self._validate_params()
        with restore_on_error(self):
            features = prepare_features(self, X, reset=True)
            target = check_target(y, numeric=False, n_samples=features.shape[0])
            try:
                check_classification_targets(target)
                classes, y_encoded = np.unique(target, return_inverse=True)
            except (TypeError, ValueError) as exc:
                raise InvalidData(str(exc)) from exc
            if classes.shape[0] < 2:
                raise InvalidData(
                    "y has only one class; a classifier needs samples of at least 2 classes "
                    f"(got only {classes[0]!r})."
                )
            # Labels travel as 0..k-1 so any label type (strings, bools, mixed widths)
            # survives the Parquet round trip; predictions are mapped back via classes_.
            self._fit_upstream(
                features,
                y_encoded.astype(np.int64),
                n_classes=classes.shape[0],
                description=description,
            )
            self.classes_ = classes
        return self

    def _fit_task_config(self, values: dict[str, Any]) -> Any:
        from tabpfn_gateway.protocol.messages import (
            ClassifierFitTaskConfig,
            ClassifierTabPFNConfig,
        )

        return ClassifierFitTaskConfig(tabpfn_config=ClassifierTabPFNConfig(**values))

    def _predict_config(self, output_type: str) -> Any:
        from tabpfn_gateway.protocol.messages import ClassifierConfig, ClassifierPredictParams

        return ClassifierConfig(
            tabpfn_config=self.tabpfn_config_,
            predict_params=ClassifierPredictParams(output_type=output_type),
        )

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Predict class labels for ``X``.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            The samples, with the columns seen in ``fit``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, of the type of ``classes_``.
        """
        check_is_fitted(self)
        raw = np.asarray(self._predict_upstream(X, self._predict_config("preds"), "preds"))
        try:
            codes = raw.astype(np.int64)
        except (TypeError, ValueError) as exc:
            raise MalformedResponse(
                "The upstream returned labels that are not class codes."
            ) from exc
        n_classes = len(self.classes_)
        if codes.ndim != 1 or codes.min(initial=0) < 0 or codes.max(initial=0) >= n_classes:
            raise MalformedResponse("The upstream returned labels outside the fitted classes.")
        return np.asarray(self.classes_.take(codes))

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Predict class probabilities for ``X``.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            The samples, with the columns seen in ``fit``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class, columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        proba = np.asarray(
            self._predict_upstream(X, self._predict_config("probas"), "probas"), dtype=np.float64
        )
        if proba.ndim != 2 or proba.shape[1] != len(self.classes_):
            raise MalformedResponse(
                f"The upstream returned probabilities of shape {proba.shape} for "
                f"{len(self.classes_)} classes."
            )
        return proba

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_id_") and hasattr(self, "classes_")

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags


# Cleaned first (Python 3.13 strips docstring indentation at compile time, older ones do not),
# so the shared block lands at the same indentation on every supported version.
GatewayClassifier.__doc__ = inspect.cleandoc(GatewayClassifier.__doc__ or "").replace(
    "{shared_parameters}\n", textwrap.dedent(SHARED_PARAMETER_DOCS) + "\n"
)
