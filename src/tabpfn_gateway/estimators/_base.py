"""What GatewayClassifier and GatewayRegressor share: parameters, backend, fit and batching."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import SecretStr
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from tabpfn_gateway.errors import InvalidData
from tabpfn_gateway.estimators._batching import (
    check_train_set,
    limit_for_model,
    merge_predictions,
    plan_batches,
)
from tabpfn_gateway.estimators._data import prepare_features, row_slice
from tabpfn_gateway.estimators._progress import FitProgress, PredictProgress, progress_wanted

if TYPE_CHECKING:
    from tabpfn_gateway.estimators.backends import Backend
    from tabpfn_gateway.protocol.messages import ModelLimit, ThinkingConfig

__all__ = ["SHARED_PARAMETER_DOCS", "GatewayEstimatorBase", "restore_on_error"]

# Parameters that go into the upstream's tabpfn_config, as tabpfn-client sends them.
_SHARED_TABPFN_PARAMS = (
    "model_path",
    "n_estimators",
    "softmax_temperature",
    "average_before_softmax",
    "ignore_pretraining_limits",
    "inference_precision",
    "random_state",
    "inference_config",
    "categorical_features_indices",
    "fit_mode",
)

# The tabpfn-client parameters common to both estimators, documented once (numpydoc), and
# spliced into each class docstring.
SHARED_PARAMETER_DOCS = """\
    model_path : str or None, default=None
        The TabPFN model to use. None or "auto" lets the upstream pick its latest default
        model ("default" is an alias); "v2.5_default" and the other names of
        ``tabpfn-client`` pin one.

    n_estimators : int or None, default=None
        Size of TabPFN's ensemble (forward passes with differently preprocessed inputs).
        None: the upstream's default (8).

    softmax_temperature : float or None, default=None
        Temperature of the final softmax; lower is more confident. None: upstream default.

    average_before_softmax : bool or None, default=None
        Average the ensemble's logits before the softmax instead of after.

    ignore_pretraining_limits : bool, default=False
        Let the model run on data outside its pre-training ranges.

    inference_precision : {"autocast", "auto"} or None, default=None
        Numeric precision of inference on the upstream.

    random_state : int, RandomState instance or None, default=0
        Seed of TabPFN's randomness: an int gives reproducible results. A RandomState
        draws a seed at each fit; None lets the upstream choose.

    inference_config : dict or None, default=None
        Advanced options of TabPFN's ``InferenceConfig`` (e.g. ``{"SUBSAMPLE_SAMPLES":
        100_000}`` for large training sets).

    categorical_features_indices : list of int or None, default=None
        Columns to treat as categorical; None lets TabPFN infer them.

    fit_mode : {"fit_preprocessors", "fit_with_cache"} or None, default=None
        What the upstream keeps at fit time ("fit_with_cache" serves later predictions
        from a cache).

    paper_version : bool, default=False
        Use the model as described in the TabPFN paper (no preprocessing/text systems).

    thinking_mode : bool, default=False
        Spend extra fit-time compute for more accuracy (same as ``thinking_effort="medium"``).

    thinking_effort : {"medium", "high"} or None, default=None
        Effort of thinking mode; setting it turns thinking on.

    thinking_timeout_s : float or None, default=None
        Time budget of a thinking fit, in seconds (at most 2400).

    thinking_metric : str or None, default=None
        Metric a thinking fit optimises (e.g. "roc_auc", "rmse").

    group_col : str, list of str or None, default=None
        Columns identifying groups of rows kept together by a thinking fit (X must be a
        DataFrame holding them).

    time_col : str or None, default=None
        Time column for a thinking fit's validation blocks (not with ``group_col``).

    group_time_col : str or None, default=None
        Orders rows within a group (needs ``group_col``).

    api_mode : {"auto", "sync", "async"}, default="auto"
        How a fit is run: one long request ("sync"), a job polled until done ("async",
        with a progress bar), or chosen by training-set size ("auto").

    text_handling : {"advanced", "simple"}, default="advanced"
        Text-processing preset of the upstream.

    base_url : str or None, default=None
        The gateway's URL. None: ``TABPFN_GATEWAY_URL``. Ignored when ``backend`` is set.

    api_key : str, SecretStr or None, default=None
        The gateway key. None: ``TABPFN_GATEWAY_API_KEY``, then the OS keyring entry that
        :func:`tabpfn_gateway.login` stored for ``base_url``. Ignored when ``backend`` is set.

    timeout : float, default=900.0
        Seconds one HTTP call may take. Ignored when ``backend`` is set.

    backend : Backend or None, default=None
        Where calls go: an :class:`~tabpfn_gateway.estimators.backends.HTTPBackend`, an
        :class:`~tabpfn_gateway.estimators.backends.InProcessBackend` (e.g.
        :func:`tabpfn_gateway.testing.local_gateway`), or None for HTTP to ``base_url``.

    progress : bool, default=True
        Show tqdm bars for async fits and batched predictions, when stderr is a terminal
        or in a notebook. False: never.
"""


class GatewayEstimatorBase(BaseEstimator):  # type: ignore[misc]
    """Shared machinery; subclasses define the task and the prediction methods."""

    _task: ClassVar[str]
    _tabpfn_params: ClassVar[tuple[str, ...]] = _SHARED_TABPFN_PARAMS

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "model_path": [str, None],
        "n_estimators": [Interval(Integral, 1, None, closed="left"), None],
        "softmax_temperature": [Interval(Real, 0, None, closed="neither"), None],
        "average_before_softmax": ["boolean", None],
        "ignore_pretraining_limits": ["boolean"],
        "inference_precision": [StrOptions({"autocast", "auto"}), None],
        "random_state": ["random_state"],
        "inference_config": [dict, None],
        "categorical_features_indices": ["array-like", None],
        "fit_mode": [StrOptions({"fit_preprocessors", "fit_with_cache"}), None],
        "paper_version": ["boolean"],
        "thinking_mode": ["boolean"],
        "thinking_effort": [StrOptions({"medium", "high"}), None],
        "thinking_timeout_s": [Interval(Real, 0, 2400, closed="right"), None],
        "thinking_metric": [str, None],
        "group_col": [str, list, None],
        "time_col": [str, None],
        "group_time_col": [str, None],
        "api_mode": [StrOptions({"auto", "sync", "async"})],
        "text_handling": [StrOptions({"advanced", "simple"})],
        "base_url": [str, None],
        "api_key": [str, SecretStr, None],
        "timeout": [Interval(Real, 0, None, closed="neither")],
        "backend": [HasMethods(["fit", "predict", "get_settings"]), None],
        "progress": ["boolean"],
    }

    # -- display ---------------------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        # scikit-learn prints estimators (Pipeline, GridSearchCV, notebooks' HTML table) from
        # get_params, not from __repr__: hand a plain-str key out wrapped so it prints masked.
        # The wrapper is a str (clone and set_params pass it back unchanged and it still
        # works as the key) and is kept as is once stored, which clone's identity check needs.
        params: dict[str, Any] = super().get_params(deep=deep)
        key = params.get("api_key")
        if isinstance(key, str) and not isinstance(key, MaskedKey):
            params["api_key"] = MaskedKey(key)
        return params

    # -- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        # A client holds sockets; it is rebuilt from the parameters on first use.
        state.pop("_http_backend", None)
        return state

    # -- backend ---------------------------------------------------------------------------

    def _get_backend(self) -> Backend:
        given: Backend | None = self.backend
        if given is not None:
            return given
        from tabpfn_gateway.estimators.backends import shared_http_backend

        # Found from the parameters on first use, again if set_params changed them; shared
        # with the process's other estimators for the same gateway, key and timeout.
        config = (self.base_url, _key_fingerprint(self.api_key), float(self.timeout))
        cached: tuple[Any, Backend] | None = self.__dict__.get("_http_backend")
        if cached is None or cached[0] != config:
            backend = shared_http_backend(self.base_url, self.api_key, timeout=config[2])
            cached = (config, backend)
            self._http_backend = cached
        return cached[1]

    # -- fit -------------------------------------------------------------------------------

    def _tabpfn_config_values(self, *, random_state: int | None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self._tabpfn_params:
            value: Any = random_state if name == "random_state" else getattr(self, name)
            if value is None:
                continue  # None means "the upstream's default", as in tabpfn-client
            if name == "categorical_features_indices":
                value = [int(i) for i in value]
            values[name] = value
        return values

    def _seed(self) -> int | None:
        if self.random_state is None or isinstance(self.random_state, Integral):
            return None if self.random_state is None else int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _thinking(self) -> bool:
        # Setting an effort alone turns thinking on (tabpfn-client's contract).
        return bool(self.thinking_mode or self.thinking_effort)

    def _tabpfn_systems(self) -> list[str]:
        thinking = self._thinking()
        if self.paper_version and thinking:
            raise InvalidData("paper_version and thinking mode cannot be enabled together.")
        if self.paper_version:
            return []
        return ["preprocessing", "text", "thinking"] if thinking else ["preprocessing", "text"]

    def _check_group_columns(self, X: Any) -> None:  # noqa: N803
        group_cols = [self.group_col] if isinstance(self.group_col, str) else self.group_col or []
        named = [*group_cols, *(c for c in (self.time_col, self.group_time_col) if c)]
        if not named:
            return
        if not self._thinking():
            raise InvalidData(
                "group_col, time_col and group_time_col need thinking mode: set thinking_mode=True."
            )
        if self.group_col is not None and self.time_col is not None:
            raise InvalidData("group_col and time_col cannot be combined.")
        if self.group_time_col is not None and self.group_col is None:
            raise InvalidData("group_time_col requires group_col.")
        columns = getattr(X, "columns", None)
        if columns is None:
            raise InvalidData(
                "group_col, time_col and group_time_col name columns, so X must be a pandas "
                f"DataFrame; got {type(X).__name__}."
            )
        missing = [c for c in named if c not in columns]
        if missing:
            raise InvalidData(f"X is missing the columns {missing}.")

    def _thinking_config(self) -> ThinkingConfig | None:
        if not self._thinking():
            return None
        from tabpfn_gateway.protocol.messages import ThinkingConfig

        return ThinkingConfig(
            effort=self.thinking_effort,
            timeout_secs=self.thinking_timeout_s,
            metric=self.thinking_metric,
            group_col=self.group_col,
            time_col=self.time_col,
            group_time_col=self.group_time_col,
        )

    def _limit(self, backend: Backend) -> ModelLimit:
        return limit_for_model(backend.get_settings(), self.model_path)

    def _fit_upstream(
        self,
        X: Any,  # noqa: N803
        y_sent: np.ndarray,
        *,
        n_classes: int | None,
        description: str | None,
    ) -> None:
        """Check limits, fit on the upstream and set the fitted state (only on success)."""
        self._check_group_columns(X)
        systems = self._tabpfn_systems()
        thinking_config = self._thinking_config()
        backend = self._get_backend()
        check_train_set(self._limit(backend), X.shape[0], X.shape[1], n_classes=n_classes)
        task_config = self._fit_task_config(self._tabpfn_config_values(random_state=self._seed()))
        progress = FitProgress(progress_wanted(self.progress))
        try:
            from tabpfn_gateway.protocol.options import FitOptions

            options = FitOptions(
                tabpfn_systems=systems,
                text_handling=self.text_handling,
                thinking_config=thinking_config,
                api_mode=str(getattr(self.api_mode, "value", self.api_mode)),
                description=description,
            )
            result = backend.fit(X, y_sent, task_config, options, on_poll=progress)
        finally:
            progress.close()
        self.model_id_ = str(result.fitted_train_set_id)
        self.fit_timings_ = result.timings
        self.tabpfn_config_ = task_config.tabpfn_config
        self._n_train_rows = int(X.shape[0])

    def _fit_task_config(self, values: dict[str, Any]) -> Any:
        raise NotImplementedError

    # -- predict ---------------------------------------------------------------------------

    def _predict_upstream(self, X: Any, task_config: Any, output_type: str) -> Any:  # noqa: N803
        """Predict ``X`` in batches within the upstream's limits, joined like one call."""
        check_is_fitted(self)
        features = prepare_features(self, X, reset=False)
        self._check_group_columns(features)
        backend = self._get_backend()
        inference_config = self.inference_config or {}
        batches = plan_batches(
            self._limit(backend),
            n_rows=features.shape[0],
            n_cols=features.shape[1],
            n_train_rows=self._n_train_rows,
            subsampled="SUBSAMPLE_SAMPLES" in inference_config,
            full_output=output_type == "full",
        )
        progress = PredictProgress(
            progress_wanted(self.progress), total_rows=features.shape[0], batches=len(batches)
        )
        parts: list[Any] = []
        try:
            for start, stop in batches:
                batch = row_slice(features, start, stop)
                result = backend.predict(self.model_id_, batch, task_config)
                parts.append(result.y_pred)
                progress.advance(stop - start)
        finally:
            progress.close()
        return merge_predictions(parts, output_type)


class MaskedKey(str):
    """A gateway key as ``get_params`` hands it out: a str whose repr never shows it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (MaskedKey, (str.__str__(self),))


def _key_fingerprint(api_key: Any) -> str | None:
    # Only to notice set_params(api_key=...): a digest, so no second copy of the key is kept.
    if api_key is None:
        return None
    raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else str(api_key)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@contextmanager
def restore_on_error(estimator: BaseEstimator) -> Iterator[None]:
    """Undo the ``n_features_in_`` / ``feature_names_in_`` a failed fit set, so a failed
    refit leaves the previous fit consistent and usable."""
    names = ("n_features_in_", "feature_names_in_")
    saved = {name: estimator.__dict__[name] for name in names if name in estimator.__dict__}
    try:
        yield
    except BaseException:
        for name in names:
            if name in saved:
                estimator.__dict__[name] = saved[name]
            else:
                estimator.__dict__.pop(name, None)
        raise
