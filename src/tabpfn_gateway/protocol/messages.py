"""The TabPFN wire schemas: a vendored copy of ``tabpfn_client.api_models`` (0.6.x) plus our own.

Copyright (c) Prior Labs GmbH 2025, licensed under the Apache License, Version 2.0; generated code
copied from tabpfn-client 0.6.1 (``tabpfn_client/api_models.py``). Why a copy: importing
``tabpfn_client.api_models`` runs ``tabpfn_client/__init__.py``, which imports the estimators,
scikit-learn's datasets, omegaconf and more (about 2 s measured with ``python -X importtime``),
and builds the vendor's process-global HTTP client. ``tests/test_protocol_messages.py`` keeps this
copy equal to the vendor's: every model's ``model_json_schema()`` must match.

Edits to the vendor's text, all schema-neutral: ``Union[...]`` written as ``X | Y``, ``ruff format``, type hints on
``UnknownEnum``'s schema hook. Our own additions follow the vendored part, below the marker.
"""

# Vendored generated text stays as the vendor wrote it (long descriptions, str+Enum bases whose
# str() differs from StrEnum's), so a diff against a new tabpfn-client release stays readable.
# ruff: noqa: E501, UP042

# Vendor's notes, kept:
#
# Forward-compat note: enum-typed fields are widened to `EnumName | UnknownEnum`
# (and `Literal[...] | str` for inline literals) so the SDK does not
# reject response payloads when the server adds a new enum value. Known
# values still deserialize to the enum member; unrecognized values flow
# through as `UnknownEnum` (a `str` subclass) instead of raising a
# ValidationError. Widened fields are wrapped in
# `Annotated[..., Field(union_mode="left_to_right")]` because pydantic's
# default smart mode would land known values in the wider branch.
# Discriminator `const` fields are intentionally left non-forward-compatible.
#
# Nullified-defaults note: every non-required field is projected as
# `<type> | None = None`. The server's defaults (literal or default_factory)
# are intentionally dropped so an omitted (None) value lets the server apply
# its own. `const` discriminator fields keep their fixed value.

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, GetCoreSchemaHandler
from pydantic_core import core_schema


class UnknownEnum(str):
    """Sentinel for enum values not known to this SDK — see header."""

    @property
    def value(self) -> str:
        return str(self)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


DatasetFileType = Literal["csv", "parquet"]


TabPFNSystem = Literal["preprocessing", "text", "thinking"]


TextHandling = Literal["advanced", "simple"]


ThinkingEffort = Literal["medium", "high"]


class AsyncSettings(BaseModel):
    use_above_trainset_size_bytes: int
    poll_timeout_secs: float


class ClassifierOutputType(str, Enum):
    PROBAS = "probas"
    PREDS = "preds"


class ClassifierPredictParams(BaseModel):
    output_type: (
        Annotated[ClassifierOutputType | UnknownEnum, Field(union_mode="left_to_right")] | None
    ) = None


class FitMode(str, Enum):
    FIT_PREPROCESSORS = "fit_preprocessors"
    FIT_WITH_CACHE = "fit_with_cache"


class ClassifierTabPFNConfig(BaseModel):
    n_estimators: int | None = None
    categorical_features_indices: list[int] | None = None
    softmax_temperature: float | None = None
    average_before_softmax: bool | None = None
    random_state: int | None = None
    inference_config: dict[str, Any] | None = Field(
        default=None,
        description="Refer to tabpfn.inference_config.InferenceConfig for more details.",
    )
    inference_precision: (
        Annotated[Literal["autocast", "auto"] | str, Field(union_mode="left_to_right")] | None
    ) = None
    ignore_pretraining_limits: bool | None = None
    fit_mode: Annotated[FitMode | UnknownEnum, Field(union_mode="left_to_right")] | None = None
    model_path: str | None = None
    balance_probabilities: bool | None = None


class PredictionTask(str, Enum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class ClassifierConfig(BaseModel):
    task: Literal[PredictionTask.CLASSIFICATION] = PredictionTask.CLASSIFICATION
    tabpfn_config: ClassifierTabPFNConfig | None = None
    predict_params: ClassifierPredictParams | None = None


class ClassifierFitTaskConfig(BaseModel):
    task: Literal[PredictionTask.CLASSIFICATION] = PredictionTask.CLASSIFICATION
    tabpfn_config: ClassifierTabPFNConfig | None = None


class ClassifierMetadata(BaseModel):
    test_set_num_rows: int
    test_set_num_cols: int
    n_estimators: int | None = None
    billing_model_version: str | None = None
    execution_mode: (
        Annotated[Literal["standard", "thinking", "cache"] | str, Field(union_mode="left_to_right")]
        | None
    ) = None
    cache_outcome: (
        Annotated[
            Literal["not_requested", "hit", "miss", "fallback"] | str,
            Field(union_mode="left_to_right"),
        ]
        | None
    ) = None
    task: Literal[PredictionTask.CLASSIFICATION] = PredictionTask.CLASSIFICATION
    package_version: str
    tabpfn_config: ClassifierTabPFNConfig
    classes: list[str | int | float | bool] | None = None


class ModelVersion(str, Enum):
    V2 = "v2"
    V2_5 = "v2.5"
    V2_6 = "v2.6"
    V3 = "v3"
    V3_5 = "v3.5"
    V3_5_FAST = "v3.5-fast"


class FileInfo(BaseModel):
    format: Annotated[DatasetFileType | str, Field(union_mode="left_to_right")]
    hash: str | None = Field(
        default=None, description="The crc32c hash of the file, used to deduplicate the file."
    )
    size_bytes: int | None = Field(
        default=None,
        description="The size of the file in bytes, used to compute the optimal number of chunks when chunking is enabled.",
    )
    use_chunks: bool | None = Field(
        default=None,
        description="Whether to split the the file into chunks and upload them in parallel.",
    )


class FileUploadInfo(BaseModel):
    signed_urls: list[str]
    expires_at: float
    required_headers: dict[str, str]


class FitStatus(str, Enum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class FitTimings(BaseModel):
    """Where a fit's time went. Queue wait covers everything outside worker
    processing: waiting for a free worker and transport.
    """

    elapsed_s: float = Field(
        description="Seconds from submission until the fit completed, or until now while it is pending."
    )
    queue_wait_s: float | None = Field(
        default=None, description="Seconds the fit waited for a worker. Set once the fit completed."
    )
    train_set_transform_s: float | None = Field(
        default=None,
        description="Seconds a worker spent loading, validating and preprocessing the train set. Set once the fit completed.",
    )
    fit_s: float | None = Field(
        default=None,
        description="Seconds a worker spent fitting the model; 0 when the model is fitted at predict time. Set once the fit completed.",
    )


class ModelLimit(BaseModel):
    train_set_max_rows: int
    train_set_max_cells: int = Field(
        description="Maximum training cells per estimator: selected rows times uploaded columns. Row subsampling can keep each context below this limit even when the full upload exceeds it."
    )
    train_set_max_upload_cells: int = Field(
        description="Maximum cells in the full training upload before row subsampling. This bounds the table processed before estimator contexts are selected."
    )
    test_set_max_rows: int
    max_classes: int
    max_cols: int
    test_set_max_rows_w_full_regression_output: int
    predict_row_pairs_budget: int
    test_set_max_cells: int


class PredictTimings(BaseModel):
    """Where a predict's time went, per stage. Queue wait covers everything
    outside worker processing: waiting for a free worker and transport. A refit
    the server triggers counts towards the stage it happened in.
    """

    test_set_transform_queue_wait_s: float | None = Field(
        default=None,
        description="Seconds the test set transform waited for a worker. Null when an earlier request already transformed this test set.",
    )
    test_set_transform_s: float | None = Field(
        default=None,
        description="Seconds a worker spent loading, validating and preprocessing the test set. Null when an earlier request already transformed this test set.",
    )
    predict_queue_wait_s: float | None = Field(
        default=None, description="Seconds the prediction waited for a worker."
    )
    predict_s: float | None = Field(default=None, description="Seconds a worker spent predicting.")


class RegressorOutputType(str, Enum):
    MEAN = "mean"
    MEDIAN = "median"
    MODE = "mode"
    QUANTILES = "quantiles"
    FULL = "full"
    MAIN = "main"


class RegressorPredictParams(BaseModel):
    output_type: (
        Annotated[RegressorOutputType | UnknownEnum, Field(union_mode="left_to_right")] | None
    ) = None
    quantiles: list[float] | None = None


class RegressorTabPFNConfig(BaseModel):
    n_estimators: int | None = None
    categorical_features_indices: list[int] | None = None
    softmax_temperature: float | None = None
    average_before_softmax: bool | None = None
    random_state: int | None = None
    inference_config: dict[str, Any] | None = Field(
        default=None,
        description="Refer to tabpfn.inference_config.InferenceConfig for more details.",
    )
    inference_precision: (
        Annotated[Literal["autocast", "auto"] | str, Field(union_mode="left_to_right")] | None
    ) = None
    ignore_pretraining_limits: bool | None = None
    fit_mode: Annotated[FitMode | UnknownEnum, Field(union_mode="left_to_right")] | None = None
    model_path: str | None = None


class RegressorConfig(BaseModel):
    task: Literal[PredictionTask.REGRESSION] = PredictionTask.REGRESSION
    tabpfn_config: RegressorTabPFNConfig | None = None
    predict_params: RegressorPredictParams | None = None


class RegressorFitTaskConfig(BaseModel):
    task: Literal[PredictionTask.REGRESSION] = PredictionTask.REGRESSION
    tabpfn_config: RegressorTabPFNConfig | None = None


class RegressorMetadata(BaseModel):
    test_set_num_rows: int
    test_set_num_cols: int
    n_estimators: int | None = None
    billing_model_version: str | None = None
    execution_mode: (
        Annotated[Literal["standard", "thinking", "cache"] | str, Field(union_mode="left_to_right")]
        | None
    ) = None
    cache_outcome: (
        Annotated[
            Literal["not_requested", "hit", "miss", "fallback"] | str,
            Field(union_mode="left_to_right"),
        ]
        | None
    ) = None
    task: Literal[PredictionTask.REGRESSION] = PredictionTask.REGRESSION
    package_version: str
    tabpfn_config: RegressorTabPFNConfig


class ThinkingConfig(BaseModel):
    effort: Annotated[ThinkingEffort | str, Field(union_mode="left_to_right")] | None = None
    timeout_secs: float | None = None
    metric: str | None = None
    group_col: str | list[str] | None = None
    time_col: str | None = None
    group_time_col: str | None = None


Prediction = list[Any] | list[list[Any]] | dict[str, list[Any] | list[list[Any]]]


FitTaskConfig = Annotated[
    ClassifierFitTaskConfig | RegressorFitTaskConfig, Field(discriminator="task")
]


Metadata = Annotated[ClassifierMetadata | RegressorMetadata, Field(discriminator="task")]


TaskConfig = Annotated[ClassifierConfig | RegressorConfig, Field(discriminator="task")]


class DuplicateTestSetErrorResponse(BaseModel):
    message: str
    error_code: str = "DUPLICATE_TEST_SET_UPLOAD"
    trace_id: UUID | None = None
    test_set_upload_id: UUID


class DuplicateTrainSetErrorResponse(BaseModel):
    message: str
    error_code: str = "DUPLICATE_TRAIN_SET_UPLOAD"
    trace_id: UUID | None = None
    train_set_upload_id: UUID


class FitRequest(BaseModel):
    task_config: FitTaskConfig
    tabpfn_systems: (
        list[Annotated[TabPFNSystem | str, Field(union_mode="left_to_right")]] | None
    ) = None
    text_handling: Annotated[TextHandling | str, Field(union_mode="left_to_right")] | None = None
    thinking_config: ThinkingConfig | None = None
    train_set_upload_id: UUID


class FitResponse(BaseModel):
    fitted_train_set_id: UUID
    status: Annotated[FitStatus | UnknownEnum, Field(union_mode="left_to_right")]
    timings: FitTimings | None = None


class GetFitStatusRequest(BaseModel):
    fitted_train_set_id: UUID


class GetFitStatusResponse(BaseModel):
    fitted_train_set_id: UUID
    status: Annotated[FitStatus | UnknownEnum, Field(union_mode="left_to_right")]
    retry_in_secs: float | None = None
    error: str | None = None
    error_code: str | None = None
    timings: FitTimings | None = None


class GetSettingsResponse(BaseModel):
    default_model_version: Annotated[ModelVersion | UnknownEnum, Field(union_mode="left_to_right")]
    max_model_limit: ModelLimit
    model_limits: dict[
        Annotated[ModelVersion | UnknownEnum, Field(union_mode="left_to_right")], ModelLimit
    ]
    dataset_max_size_bytes: int
    async_settings: AsyncSettings


class NotFoundErrorResponse(BaseModel):
    message: str
    error_code: str = "NOT_FOUND"
    trace_id: UUID | None = None


class PredictRequest(BaseModel):
    test_set_upload_id: UUID
    fitted_train_set_id: UUID
    task_config: TaskConfig


class PredictResponse(BaseModel):
    prediction: Prediction
    metadata: Metadata
    timings: PredictTimings | None = None


class PrepareTestSetUploadRequest(BaseModel):
    fitted_train_set_id: UUID
    x_test_info: FileInfo
    force_reupload: bool | None = Field(
        default=None,
        description="Whether to force the upload of the file even if a file with the same hash already exists.",
    )


class PrepareTestSetUploadResponse(BaseModel):
    test_set_upload_id: UUID
    x_test_info: FileUploadInfo


class PrepareTrainSetUploadRequest(BaseModel):
    x_train_info: FileInfo
    y_train_info: FileInfo
    description: str | None = None
    force_reupload: bool | None = Field(
        default=None,
        description="Whether to force the upload of the file even if a file with the same hash already exists.",
    )


class PrepareTrainSetUploadResponse(BaseModel):
    train_set_upload_id: UUID
    x_train_info: FileUploadInfo
    y_train_info: FileUploadInfo


class SubmitFitJobRequest(BaseModel):
    task_config: FitTaskConfig
    tabpfn_systems: (
        list[Annotated[TabPFNSystem | str, Field(union_mode="left_to_right")]] | None
    ) = None
    text_handling: Annotated[TextHandling | str, Field(union_mode="left_to_right")] | None = None
    thinking_config: ThinkingConfig | None = None
    train_set_upload_id: UUID


class SubmitFitJobResponse(BaseModel):
    fitted_train_set_id: UUID


class QuotaOperation(str, Enum):
    PREDICT = "predict"
    THINKING_PREDICT = "thinking_predict"
    THINKING_FIT = "thinking_fit"
    CACHE_PREDICT = "cache_predict"


class EstimateCostRequest(BaseModel):
    train_rows: int
    raw_columns: int
    test_rows: int | None = None
    model_version: (
        Annotated[ModelVersion | UnknownEnum, Field(union_mode="left_to_right")] | None
    ) = None
    operation: Annotated[QuotaOperation | UnknownEnum, Field(union_mode="left_to_right")] | None = (
        None
    )
    n_estimators: int | None = None
    thinking_effort: Annotated[ThinkingEffort | str, Field(union_mode="left_to_right")] | None = (
        None
    )


class EstimateCostResponse(BaseModel):
    estimated_cost: int
    pricing_version: str
    inputs: EstimateCostRequest


# ---- end of the vendored part; our own models below ---------------------------------------


class PredictResponseWithDownloadURI(BaseModel):
    """A predict answered with a signed download URL for the prediction.

    Mirrors the model ``tabpfn_client.client`` defines inline (not among the generated ones):
    the client follows it when the server sends it.
    """

    prediction_uri: str
    prediction_uri_expires_in_secs: int
    metadata: Metadata
    timings: PredictTimings | None = None


PredictResponseUnion = PredictResponse | PredictResponseWithDownloadURI
