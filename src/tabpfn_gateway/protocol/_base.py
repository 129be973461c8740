"""What the sync and async protocol clients share: options, request building, parsing, polling.

Everything here is free of I/O, so both clients (``client.py``, ``aclient.py``) run the same
rules: which headers go where, how answers are validated, how a prediction becomes arrays,
when a step may be retried and how long an async fit is polled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.cookiejar import CookieJar, DefaultCookiePolicy
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import httpx
import tenacity
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from tabpfn_gateway.errors import (
    ConfigurationError,
    InvalidRequest,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tabpfn_gateway.protocol._errors import error_from_response, is_connect_failure, malformed
from tabpfn_gateway.protocol.messages import (
    FileInfo,
    FitRequest,
    FitStatus,
    FitTaskConfig,
    GetFitStatusResponse,
    GetSettingsResponse,
    Prediction,
    PredictResponse,
    PredictResponseUnion,
    PredictResponseWithDownloadURI,
    PrepareTestSetUploadRequest,
    PrepareTrainSetUploadRequest,
    SubmitFitJobRequest,
)
from tabpfn_gateway.protocol.options import FitOptions
from tabpfn_gateway.protocol.results import PredictionResult
from tabpfn_gateway.protocol.serialization import to_parquet

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

logger = logging.getLogger("tabpfn_gateway.protocol")

ModelT = TypeVar("ModelT", bound=BaseModel)


class Endpoint:
    """Paths of the TabPFN API, as ``tabpfn-client`` 0.6 calls them."""

    ROOT = "/"
    PROTECTED = "/protected/"
    GREETINGS = "/retrieve_greeting_messages/"
    SETTINGS = "/tabpfn/get_settings"
    PREPARE_TRAIN = "/tabpfn/prepare_train_set_upload"
    FIT = "/tabpfn/fit"
    SUBMIT_FIT = "/tabpfn/submit_fit_job"
    FIT_STATUS = "/tabpfn/get_fit_status"
    PREPARE_TEST = "/tabpfn/prepare_test_set_upload"
    PREDICT = "/tabpfn/predict"
    USAGE = "/get_api_usage/"
    ESTIMATE_COST = "/tabpfn/estimate_cost"


# The vendor's floor under the upstream's `retry_in_secs`: a zero or negative hint must not
# busy-poll. Until the first hint arrives the vendor waits 5 s; so do we.
MIN_POLL_INTERVAL = 0.3
DEFAULT_POLL_INTERVAL = 5.0
# One status poll is a small read; it must not inherit the 15-minute fit timeout.
POLL_REQUEST_TIMEOUT = 30.0
# A poll failing this many times in a row with the same non-transient cause ends the wait:
# a persistent 500 should not hold a caller until the deadline (the vendor allows 3).
MAX_CONSECUTIVE_POLL_ERRORS = 5
# The vendor's defaults when the upstream sends no async settings.
DEFAULT_ASYNC_THRESHOLD_BYTES = 50 * 1024 * 1024
DEFAULT_POLL_TIMEOUT = 7200.0

API_MODES = frozenset({"auto", "sync", "async"})
TEXT_HANDLING = frozenset({"advanced", "simple"})


def _own_version() -> str:
    try:
        return version("tabpfn-gateway")
    except PackageNotFoundError:
        return "0.0.0.dev0"


# The upstream answers 426 to clients it considers too old. We say which tabpfn-client
# generation our vendored messages follow, never the version of a tabpfn-client that happens
# to be installed (it is optional, and another generation may speak another protocol).
PRIOR_CLIENT_VERSION = "0.6.1"
USER_AGENT = f"tabpfn-gateway/{_own_version()} (tabpfn-client-protocol/{PRIOR_CLIENT_VERSION})"


#: How long an upstream's settings (limits, async thresholds) are trusted before asking again.
SETTINGS_TTL_SECONDS = 300.0


@dataclass(frozen=True)
class ClientOptions:
    """The settings a client and its ``with_token`` siblings share."""

    base_url: str
    timeout: float = 900.0
    connect_timeout: float = 10.0
    max_connections: int = 20
    upload_concurrency: int = 8
    poll_timeout: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    max_retries: int = 2
    retry_wait: float = 0.25
    settings_ttl: float = SETTINGS_TTL_SECONDS

    @classmethod
    def build(
        cls,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int,
        upload_concurrency: int,
        poll_timeout: float | None,
        headers: Mapping[str, str] | None,
        max_retries: int,
        retry_wait: float,
        settings_ttl: float = SETTINGS_TTL_SECONDS,
    ) -> ClientOptions:
        """Validated options; a bad value is a ``ConfigurationError`` naming it."""
        checked_url = check_base_url(base_url)
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ConfigurationError(f"{name} must be positive, got {value!r}")
        if poll_timeout is not None and not poll_timeout > 0:
            raise ConfigurationError(f"poll_timeout must be positive, got {poll_timeout!r}")
        for name, count in (
            ("max_connections", max_connections),
            ("upload_concurrency", upload_concurrency),
        ):
            if count < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {count!r}")
        if max_retries < 0 or retry_wait < 0 or settings_ttl < 0:
            raise ConfigurationError(
                "max_retries, retry_wait and settings_ttl must not be negative"
            )
        return cls(
            base_url=checked_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            upload_concurrency=upload_concurrency,
            poll_timeout=poll_timeout,
            headers=dict(headers or {}),
            max_retries=max_retries,
            retry_wait=retry_wait,
            settings_ttl=settings_ttl,
        )

    def httpx_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the pooled ``httpx.Client`` / ``httpx.AsyncClient``.

        No default headers and no cookie jar that accepts anything: the pool is shared by
        many credentials and also reaches signed URLs, so nothing may ride along implicitly.
        """
        return {
            "timeout": httpx.Timeout(self.timeout, connect=self.connect_timeout),
            "limits": httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            "follow_redirects": True,  # httpx drops Authorization on cross-origin redirects
            "cookies": _no_cookies(),
            "trust_env": True,
        }

    def url(self, path: str) -> str:
        return self.base_url + path

    def at(self, base_url: str) -> ClientOptions:
        """These options for another upstream root (a credential's own cloud URL)."""
        checked = check_base_url(base_url)
        return self if checked == self.base_url else replace(self, base_url=checked)


def check_base_url(base_url: str) -> str:
    """``base_url`` normalised (no trailing slash) if it is an absolute http(s) URL without
    credentials or a query string; else ``ConfigurationError``."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigurationError(f"Invalid upstream base URL: {exc}") from exc
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigurationError(
            "The upstream base URL must be an absolute http(s) URL, e.g. https://api.priorlabs.ai"
        )
    if url.userinfo or url.query:
        raise ConfigurationError(
            "The upstream base URL must not carry credentials or a query string."
        )
    return str(url).rstrip("/")


def _no_cookies() -> httpx.Cookies:
    # One pool serves many tokens: a cookie set for one must never be sent for another.
    return httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


def coerce_token(token: str | SecretStr | None) -> SecretStr | None:
    """``token`` as a ``SecretStr`` (``None`` stays ``None``); an empty one is a config error."""
    if token is None:
        return None
    secret = token if isinstance(token, SecretStr) else SecretStr(str(token))
    value = secret.get_secret_value().strip()
    if not value:
        raise ConfigurationError("The token is empty.")
    if any(ch in value for ch in "\r\n\x00"):
        raise ConfigurationError("The token contains control characters.")
    return SecretStr(value)


def api_headers(options: ClientOptions, token: SecretStr | None) -> dict[str, str]:
    """Headers of a call to the upstream's API (never of a signed-URL call)."""
    headers = {
        "User-Agent": USER_AGENT,
        "Prior-Client-Version": PRIOR_CLIENT_VERSION,
        "Accept": "application/json",
    }
    headers.update(options.headers)
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    return headers


def check_signed_url(url: str) -> None:
    """A signed URL must be absolute http(s); anything else is a protocol violation."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidRequest("A signed URL is not a valid URL.") from exc
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise InvalidRequest("A signed URL must be an absolute http(s) URL.")


# -- responses ---------------------------------------------------------------------------

_PREDICT_RESPONSE: TypeAdapter[PredictResponseUnion] = TypeAdapter(PredictResponseUnion)
_PREDICTION: TypeAdapter[Prediction] = TypeAdapter(Prediction)


def raise_for_error(
    response: httpx.Response,
    operation: str,
    *,
    secret: SecretStr | None,
    allowed: Sequence[int] = (),
    fitted_model: bool = False,
) -> None:
    """Raise the mapped ``UpstreamError`` unless ``response`` is a success or ``allowed``."""
    if response.status_code >= 400 and response.status_code not in allowed:
        raise error_from_response(
            response,
            operation,
            secret=secret.get_secret_value() if secret else None,
            fitted_model=fitted_model,
        )


def parse_model(
    response: httpx.Response,
    model: type[ModelT],
    operation: str,
    *,
    secret: SecretStr | None,
) -> ModelT:
    """Validate a success body against ``model``; a misfit is ``MalformedResponse``."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise malformed(
            response,
            operation,
            _describe(exc),
            secret=secret.get_secret_value() if secret else None,
        ) from None


def parse_predict_response(
    response: httpx.Response, *, secret: SecretStr | None
) -> PredictResponse | PredictResponseWithDownloadURI:
    """The body of ``/tabpfn/predict``: decides itself whether it is inline or a URI."""
    try:
        return _PREDICT_RESPONSE.validate_json(response.content)
    except ValidationError as exc:
        raise malformed(
            response,
            "predict",
            _describe(exc),
            secret=secret.get_secret_value() if secret else None,
        ) from None


def parse_prediction(response: httpx.Response) -> Prediction:
    """A prediction downloaded from a signed URL."""
    try:
        return _PREDICTION.validate_json(response.content)
    except ValidationError as exc:
        raise malformed(response, "download_prediction", _describe(exc)) from None


def parse_json_object(
    response: httpx.Response, operation: str, *, secret: SecretStr | None
) -> dict[str, Any]:
    """A success body that must be a JSON object (e.g. ``/get_api_usage/``)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise malformed(
            response,
            operation,
            "expected a JSON object",
            secret=secret.get_secret_value() if secret else None,
        )
    return body


def _describe(exc: ValidationError) -> str:
    # Field locations and messages only: `input` values could be large or sensitive.
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}"
        for err in exc.errors()[:5]
    ]
    return "; ".join(parts)


# -- retries -----------------------------------------------------------------------------


def retry_idempotent(exc: BaseException) -> bool:
    """Idempotent steps (settings, uploads, polls, predictions) retry transient failures."""
    return isinstance(exc, UpstreamUnavailable)


def retry_connect_only(exc: BaseException) -> bool:
    """Fits are not idempotent (each call is a new job): retry only if nothing was sent."""
    return is_connect_failure(exc)


def retry_never(exc: BaseException) -> bool:
    return False


def retry_kwargs(options: ClientOptions, predicate: Callable[[BaseException], bool]) -> Any:
    """Arguments for ``tenacity.Retrying`` / ``AsyncRetrying``: bounded, jittered, re-raising."""
    step = options.retry_wait
    wait: Any = (
        tenacity.wait_exponential(multiplier=step, max=step * 8) + tenacity.wait_random(0, step)
        if step > 0
        else tenacity.wait_none()
    )
    return {
        "stop": tenacity.stop_after_attempt(options.max_retries + 1),
        "wait": wait,
        "retry": tenacity.retry_if_exception(predicate),
        "reraise": True,
        "before_sleep": _log_retry,
    }


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    # The error code and message are credential-free by construction (see _errors.scrub).
    logger.warning(
        "Retrying after attempt %d failed: %s",
        state.attempt_number,
        f"[{exc.error_code}] {exc.message}" if isinstance(exc, UpstreamError) else type(exc),
    )


# -- fit ---------------------------------------------------------------------------------


@dataclass
class PreparedTrainSet:
    """A train set serialized for upload, and the request that announces it."""

    x_bytes: bytes
    y_bytes: bytes
    request: PrepareTrainSetUploadRequest
    in_memory_bytes: int


def check_fit_options(api_mode: str, text_handling: str) -> None:
    if api_mode not in API_MODES:
        raise InvalidRequest(f"api_mode must be one of {sorted(API_MODES)}, got {api_mode!r}")
    if text_handling not in TEXT_HANDLING:
        raise InvalidRequest(
            f"text_handling must be one of {sorted(TEXT_HANDLING)}, got {text_handling!r}"
        )


def as_frame(data: Any, name: str) -> pd.DataFrame:
    """``data`` as the DataFrame the vendor would build (byte-identical Parquet, same hash)."""
    import pandas as pd  # here, not at the top: the CLI and the server never build a frame

    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        try:
            frame = pd.DataFrame(data)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"{name} cannot be read as a table: {exc}") from exc
    if frame.ndim != 2 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InvalidRequest(f"{name} must be a non-empty two-dimensional table.")
    return frame


def check_size(name: str, frame: pd.DataFrame, settings: GetSettingsResponse | None) -> int:
    """In-memory size of ``frame``; past the upstream's limit a ``PayloadTooLarge``."""
    size = int(frame.memory_usage(deep=True).sum())
    if settings is not None and size > settings.dataset_max_size_bytes:
        raise PayloadTooLarge(
            f"In-memory size of {name} ({size} bytes) exceeds the upstream's limit of "
            f"{settings.dataset_max_size_bytes} bytes."
        )
    return size


def prepare_train_set(
    X: Any,  # noqa: N803 (scikit-learn's name)
    y: Any,
    settings: GetSettingsResponse | None,
    description: str | None,
) -> PreparedTrainSet:
    """Serialize X and y like the vendor and build the ``prepare_train_set_upload`` request."""
    frame_x = as_frame(X, "X")
    frame_y = as_frame(y, "y")
    if frame_x.shape[0] != frame_y.shape[0]:
        raise InvalidRequest(
            f"X and y must have the same number of rows ({frame_x.shape[0]} != {frame_y.shape[0]})."
        )
    size = check_size("x_train", frame_x, settings) + check_size("y_train", frame_y, settings)
    try:
        x_bytes, x_hash = to_parquet(frame_x)
        y_bytes, y_hash = to_parquet(frame_y)
    except (ValueError, TypeError, ImportError) as exc:
        raise InvalidRequest(f"The train set cannot be written as Parquet: {exc}") from exc
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet", hash=x_hash, size_bytes=len(x_bytes)),
        y_train_info=FileInfo(format="parquet", hash=y_hash, size_bytes=len(y_bytes)),
        description=description,
        force_reupload=False,
    )
    return PreparedTrainSet(x_bytes, y_bytes, request, size)


def use_async_fit(
    api_mode: str, in_memory_bytes: int, settings: GetSettingsResponse | None
) -> bool:
    """The vendor's rule: ``auto`` goes async above the upstream's train-set size threshold."""
    if api_mode == "sync":
        return False
    if api_mode == "async":
        return True
    threshold = (
        settings.async_settings.use_above_trainset_size_bytes
        if settings is not None
        else DEFAULT_ASYNC_THRESHOLD_BYTES
    )
    return in_memory_bytes > threshold


def fit_request(
    request_type: type[FitRequest] | type[SubmitFitJobRequest],
    train_set_upload_id: UUID,
    task_config: FitTaskConfig,
    options: FitOptions,
) -> Any:
    """A ``FitRequest`` or ``SubmitFitJobRequest`` with the vendor's field conventions."""
    return request_type(
        train_set_upload_id=train_set_upload_id,
        task_config=task_config,
        tabpfn_systems=list(options.tabpfn_systems),
        # The vendor omits the default so the upstream applies its own.
        text_handling=None if options.text_handling == "advanced" else options.text_handling,
        thinking_config=options.thinking_config,
    )


def dump(request: BaseModel) -> Any:
    """A request body exactly as the vendor sends it."""
    return request.model_dump(mode="json", exclude_none=True)


def timings_dict(timings: BaseModel | None) -> dict[str, Any] | None:
    return timings.model_dump(mode="json") if timings is not None else None


class FitPoller:
    """The clock and the rules of waiting for an async fit (shared by both clients).

    The first poll happens at once; then the client sleeps ``interval()`` (the upstream's
    ``retry_in_secs``, floored) until the fit completes. It gives up with ``UpstreamTimeout``
    as soon as the next poll could not start before the deadline. Transient poll failures
    are retried until then; ``MAX_CONSECUTIVE_POLL_ERRORS`` other failures in a row end it.
    """

    def __init__(
        self,
        fitted_train_set_id: str,
        total_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fitted_train_set_id = fitted_train_set_id
        self.total_timeout = total_timeout
        self._clock = clock
        self._deadline = clock() + total_timeout
        self._interval = DEFAULT_POLL_INTERVAL
        self._last_error: UpstreamError | None = None
        self._consecutive_errors = 0

    def on_status(self, status: GetFitStatusResponse) -> bool:
        """Take one status answer; True once the fit completed, raises if it failed."""
        self._last_error = None
        self._consecutive_errors = 0
        if status.status == FitStatus.COMPLETED:
            return True
        if status.status == FitStatus.FAILED:
            details: dict[str, Any] = {"operation": "fit"}
            if status.error_code:
                details["upstream_error_code"] = status.error_code
            raise UpstreamError(
                f"TabPFN fit {self.fitted_train_set_id} failed: "
                f"{status.error or 'no error message provided'}",
                details=details,
            )
        # PENDING, or a status a newer upstream invented: keep waiting.
        if status.retry_in_secs is not None:
            self._interval = max(status.retry_in_secs, MIN_POLL_INTERVAL)
        return False

    def on_error(self, exc: UpstreamError) -> None:
        """Take one failed poll: re-raise unless it may clear before the deadline."""
        if not exc.retryable:
            raise exc
        self._consecutive_errors += 1
        if self._consecutive_errors > MAX_CONSECUTIVE_POLL_ERRORS and not isinstance(
            exc, UpstreamTimeout
        ):
            raise exc
        self._last_error = exc
        if exc.retry_after is not None:
            self._interval = max(exc.retry_after, MIN_POLL_INTERVAL)
        logger.warning(
            "Polling fit %s failed, retrying until the deadline: [%s] %s",
            self.fitted_train_set_id,
            exc.error_code,
            exc.message,
        )

    def next_sleep(self) -> float:
        """Seconds to sleep before the next poll, or ``UpstreamTimeout`` if none fits."""
        remaining = self._deadline - self._clock()
        if remaining <= self._interval:
            message = (
                f"TabPFN fit {self.fitted_train_set_id} did not finish within the poll "
                f"timeout of {self.total_timeout:g} seconds."
            )
            if self._last_error is not None:
                message += f" The last status poll failed: {self._last_error.message}"
            raise UpstreamTimeout(message, details={"operation": "wait_for_fit"}) from (
                self._last_error
            )
        return self._interval


def poll_timeout(options: ClientOptions, settings: GetSettingsResponse | None) -> float:
    if options.poll_timeout is not None:
        return options.poll_timeout
    if settings is not None:
        return settings.async_settings.poll_timeout_secs
    return DEFAULT_POLL_TIMEOUT


# -- predict -----------------------------------------------------------------------------


@dataclass
class PreparedTestSet:
    x_bytes: bytes
    request: PrepareTestSetUploadRequest


def prepare_test_set(
    fitted_train_set_id: UUID | str,
    X: Any,  # noqa: N803 (scikit-learn's name)
    settings: GetSettingsResponse | None,
) -> PreparedTestSet:
    frame = as_frame(X, "X")
    check_size("x_test", frame, settings)
    try:
        x_bytes, x_hash = to_parquet(frame)
    except (ValueError, TypeError, ImportError) as exc:
        raise InvalidRequest(f"The test set cannot be written as Parquet: {exc}") from exc
    request = PrepareTestSetUploadRequest(
        fitted_train_set_id=as_uuid(fitted_train_set_id),
        x_test_info=FileInfo(format="parquet", hash=x_hash, size_bytes=len(x_bytes)),
        force_reupload=False,
    )
    return PreparedTestSet(x_bytes, request)


def as_uuid(value: UUID | str) -> UUID:
    """A fitted-train-set id as a UUID; anything else is ``InvalidRequest``."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidRequest("A fitted train set id must be a UUID.") from None


def _contains_none(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, list):
        return any(_contains_none(item) for item in value)
    return False


def _as_array(values: Any) -> np.ndarray:
    import numpy as np  # here, not at the top: only decoding a prediction needs it

    # The vendor's rule: nulls (e.g. masked logits) become NaN in a float array.
    return np.array(values, dtype=float if _contains_none(values) else None)


def decode_prediction(prediction: Prediction) -> np.ndarray | dict[str, np.ndarray]:
    """A wire prediction as arrays: a dict of arrays for ``full``/``main``, else one array."""
    if isinstance(prediction, dict):
        return {key: _as_array(value) for key, value in prediction.items()}
    return _as_array(prediction)


def prediction_result(
    response: PredictResponse | PredictResponseWithDownloadURI,
    prediction: Prediction,
    test_set_bytes: int | None = None,
) -> PredictionResult:
    return PredictionResult(
        y_pred=decode_prediction(prediction),
        metadata=response.metadata.model_dump(mode="json", exclude_none=True),
        timings=timings_dict(response.timings),
        test_set_bytes=test_set_bytes,
    )
