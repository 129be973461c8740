"""GatewayRegressor: TabPFN regression through a gateway, as a scikit-learn estimator."""

from __future__ import annotations

import inspect
import textwrap
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils.validation import check_is_fitted

from tabpfn_gateway.errors import InvalidData
from tabpfn_gateway.estimators._base import (
    SHARED_PARAMETER_DOCS,
    GatewayEstimatorBase,
    restore_on_error,
)
from tabpfn_gateway.estimators._data import check_target, prepare_features

if TYPE_CHECKING:
    from pydantic import SecretStr
    from sklearn.utils import Tags

    from tabpfn_gateway.estimators.backends import Backend

__all__ = ["OUTPUT_TYPES", "GatewayRegressor"]

OUTPUT_TYPES = ("mean", "median", "mode", "quantiles", "full", "main")


class GatewayRegressor(RegressorMixin, GatewayEstimatorBase):  # type: ignore[misc]
    """TabPFN regressor reached through a tabpfn-gateway, with your own gateway key.

    Takes the parameters of ``tabpfn_client.TabPFNRegressor`` (same names, same defaults)
    plus where to send calls (``base_url``, ``api_key``, ``timeout``, ``backend``) and
    ``progress``. ``predict`` returns the mean by default, or the median, the mode,
    quantiles, or TabPFN's full predictive distribution (``output_type``).

    Numpy arrays and pandas DataFrames are accepted; NaN, string and categorical columns
    are handled by TabPFN (a DataFrame is sent as a DataFrame). Test sets larger than the
    upstream allows in one call are predicted in batches and joined.

    Parameters
    ----------
    {shared_parameters}
    Attributes
    ----------
    n_features_in_ : int
        Number of features seen during :term:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    model_id_ : str
        The upstream's id of the fitted train set (``fitted_train_set_id``).

    fit_timings_ : dict or None
        Seconds the upstream spent on the fit, per stage, when it reports them.

    tabpfn_config_ : RegressorTabPFNConfig
        The TabPFN configuration sent at fit time and reused by every prediction.

    See Also
    --------
    GatewayClassifier : The classification counterpart.
    tabpfn_gateway.testing.local_gateway : An offline backend for tests.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from tabpfn_gateway import GatewayRegressor
    >>> from tabpfn_gateway.testing import local_gateway
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = GatewayRegressor(backend=local_gateway()).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _task: ClassVar[str] = "regression"

    def __init__(
        self,
        model_path: str | None = None,
        n_estimators: int | None = None,
        softmax_temperature: float | None = None,
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

    def fit(self, X: Any, y: Any, description: str | None = None) -> GatewayRegressor:  # noqa: N803
        """Fit TabPFN on ``(X, y)`` upstream; the training data is uploaded once.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Training features. NaN, strings and categorical columns are allowed.

        y : array-like of shape (n_samples,)
            Numeric targets, without NaN.

        description : str or None, default=None
            A label the upstream stores with the training set.

        Returns
        -------
        self : GatewayRegressor
            The fitted estimator.
        """
        self._validate_params()
        with restore_on_error(self):
            features = prepare_features(self, X, reset=True)
            target = check_target(y, numeric=True, n_samples=features.shape[0])
            self._fit_upstream(
                features, target.astype(np.float64), n_classes=None, description=description
            )
        return self

    def _fit_task_config(self, values: dict[str, Any]) -> Any:
        from tabpfn_gateway.protocol.messages import RegressorFitTaskConfig, RegressorTabPFNConfig

        return RegressorFitTaskConfig(tabpfn_config=RegressorTabPFNConfig(**values))

    def predict(
        self,
        X: Any,  # noqa: N803
        output_type: str = "mean",
        quantiles: list[float] | None = None,
    ) -> Any:
        """Predict targets for ``X``: a point estimate, quantiles, or the full distribution.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            The samples, with the columns seen in ``fit``.

        output_type : {"mean", "median", "mode", "quantiles", "full", "main"}, \
default="mean"
            What to return: a point estimate, the quantiles, or dicts of arrays ("full":
            mean, median, mode, quantiles, logits and bar ``borders``; "main": the same
            without logits and borders).

        quantiles : list of float or None, default=None
            Quantiles (each in [0, 1]) for ``output_type="quantiles"``; None: the
            upstream's default (0.1, 0.2, ..., 0.9).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,), list of ndarray, or dict of ndarray
            An array for point estimates, one array per quantile for "quantiles", a dict
            for "full" and "main" (split into batches, it is joined exactly as one call).
        """
        check_is_fitted(self)
        if output_type not in OUTPUT_TYPES:
            raise InvalidData(
                f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}."
            )
        if quantiles is not None:
            quantiles = [float(q) for q in quantiles]
            if not quantiles or any(not 0.0 <= q <= 1.0 for q in quantiles):
                raise InvalidData("quantiles must be a non-empty list of numbers in [0, 1].")
        from tabpfn_gateway.protocol.messages import RegressorConfig, RegressorPredictParams

        task_config = RegressorConfig(
            tabpfn_config=self.tabpfn_config_,
            predict_params=RegressorPredictParams(output_type=output_type, quantiles=quantiles),
        )
        output = self._predict_upstream(X, task_config, output_type)
        if output_type == "quantiles":
            array = np.asarray(output, dtype=np.float64)
            return list(array) if array.ndim == 2 else [array]
        if isinstance(output, dict):
            if "logits" in output:
                # JSON has no -inf; bars outside a row's support arrive as null -> NaN.
                logits = np.asarray(output["logits"], dtype=np.float64)
                output["logits"] = np.where(np.isnan(logits), -np.inf, logits)
            return output
        return np.asarray(output, dtype=np.float64)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_id_")

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags


# Cleaned first (Python 3.13 strips docstring indentation at compile time, older ones do not),
# so the shared block lands at the same indentation on every supported version.
GatewayRegressor.__doc__ = inspect.cleandoc(GatewayRegressor.__doc__ or "").replace(
    "{shared_parameters}\n", textwrap.dedent(SHARED_PARAMETER_DOCS) + "\n"
)
