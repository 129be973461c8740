"""Settings of tabpfn-gateway: one pydantic-settings class; env (TABPFN_GATEWAY_*), then .env."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tabpfn_gateway.errors import ConfigurationError

__all__ = [
    "DEFAULT_UPSTREAM_URL",
    "Settings",
    "check_database_url",
    "default_data_dir",
    "get_settings",
]

DEFAULT_UPSTREAM_URL = "https://api.priorlabs.ai"
ENV_PREFIX = "TABPFN_GATEWAY_"


def default_data_dir() -> Path:
    """Where the embedded SQLite database and a generated secret live by default."""
    return Path(platformdirs.user_data_dir("tabpfn-gateway", appauthor=False))


def _default_database_url(validated: dict[str, Any]) -> str:
    # Follows data_dir (validated before this field), so TABPFN_GATEWAY_DATA_DIR alone moves
    # the embedded database too.
    data_dir = validated.get("data_dir") or default_data_dir()
    return f"sqlite:///{Path(data_dir) / 'gateway.db'}"


def check_database_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is a SQLite, PostgreSQL or ``memory://`` URL."""
    if url.startswith("memory://"):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise ValueError(f"not a valid database URL ({_DATABASE_URL_EXAMPLES})") from None
    if backend not in {"sqlite", "postgresql"}:
        raise ValueError(
            f"a {backend} URL: only SQLite and PostgreSQL URLs are supported "
            f"({_DATABASE_URL_EXAMPLES})"
        )


_DATABASE_URL_EXAMPLES = "e.g. sqlite:////path/gateway.db or postgresql://user@host:5432/db"


class Settings(BaseSettings):
    """Every setting of the SDK, the CLI and the server.

    Precedence: arguments to ``Settings(...)`` > environment variables (``TABPFN_GATEWAY_*``)
    > a ``.env`` file in the working directory > the defaults here. Secrets are ``SecretStr``:
    their repr is ``'**********'``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # Validation errors never echo input values: one of them may be a secret.
        hide_input_in_errors=True,
    )

    # -- storage -------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for the embedded database and a generated secret key.",
    )
    database_url: str = Field(
        default_factory=_default_database_url,
        description="SQLAlchemy URL. Default: gateway.db (SQLite) in data_dir. PostgreSQL: "
        "postgresql+psycopg://user:pass@host/db (postgresql:// is accepted too).",
    )
    db_pool_size: int = Field(default=10, ge=1, description="PostgreSQL connection pool size.")
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long to wait for a pooled connection."
    )
    db_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long to wait for the database to answer a connect."
    )
    sqlite_busy_timeout_ms: int = Field(
        default=10_000, ge=0, description="How long SQLite waits on a lock held by another writer."
    )

    # -- secrets -------------------------------------------------------------------------
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts stored TabPFN tokens (HKDF-derived keys). Required for "
        "credentials; the server generates and persists one on first start if unset.",
    )
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated older secrets: used only to decrypt, during rotation.",
    )
    key_pepper: SecretStr | None = Field(
        default=None,
        description="Server-side pepper for the HMAC key hash. Default: derived from the "
        "first secret ever used (persisted), so SECRET_KEY rotation keeps keys valid.",
    )
    key_hash_scheme: Literal["hmac-sha256", "bcrypt", "argon2"] = Field(
        default="hmac-sha256",
        description="How new key secrets are hashed; older schemes are re-hashed on verify.",
    )
    key_cache_ttl_seconds: float = Field(
        default=5.0, ge=0, description="How long a verified key is trusted without a lookup."
    )
    change_poll_seconds: float = Field(
        default=0.25,
        ge=0,
        description="How often each process reads the change counter, so a revocation made "
        "anywhere (another worker, replica or the CLI) is refused here within about this long "
        "on every store; 0 turns it off (the key cache TTL bounds it then).",
    )
    last_used_flush_seconds: float = Field(
        default=30.0, ge=0, description="How often coalesced last_used_at updates are written."
    )

    # -- logging -------------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Python logging level name.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log line format: text, or json (one object a line, with the trace id).",
    )
    otel_enabled: bool = Field(
        default=False,
        description="Trace requests, upstream calls and SQL with OpenTelemetry (the otel "
        "extra; exported as the standard OTEL_* variables say).",
    )

    # -- upstream ------------------------------------------------------------------------
    upstream_url: str = Field(
        default=DEFAULT_UPSTREAM_URL, description="Base URL of TabPFN (or of a gateway)."
    )
    upstream_timeout_seconds: float = Field(
        default=900.0, gt=0, description="Timeout of one upstream call (fits can be long)."
    )
    upstream_connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout for connecting to the upstream."
    )

    # -- server --------------------------------------------------------------------------
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach the gateway at (behind a load balancer); upload "
        "URLs handed to clients start with it. Default: taken from each request.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Comma-separated hosts (or *.suffix; * for any) whose Host header may "
        "become the base of upload URLs when PUBLIC_URL is unset; other hosts get 400 "
        "HOST_NOT_ALLOWED there.",
    )
    allow_self_service_setup: bool = Field(
        default=True, description="Whether POST /api/v1/auth/setup is open."
    )
    setup_attempts_per_minute: int = Field(
        default=10, ge=1, description="Failed setups allowed per client address per minute."
    )
    setup_successes_per_hour: int = Field(
        default=10, ge=1, description="Successful setups allowed per client address per hour."
    )
    setup_concurrency: int = Field(
        default=8,
        ge=1,
        description="Setups one process verifies upstream at once (503 SETUP_BUSY past it).",
    )
    max_json_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest JSON request body accepted (413 past)."
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest dataset upload accepted (413 past)."
    )
    upload_url_ttl_seconds: int = Field(
        default=3600, ge=1, description="How long an upload URL handed to a client is valid."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDR ranges of the reverse proxies whose X-Forwarded-For "
        "is believed (hop by hop, from the right). Default: none, the socket's peer is the client.",
    )
    egress_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["storage.googleapis.com", "*.storage.googleapis.com"],
        description="Comma-separated hosts (or *.suffix) the upstream's signed upload and "
        "download URLs may point at, besides the upstream's own origin.",
    )
    egress_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDR ranges signed URLs may resolve to although private, "
        "loopback or link-local (refused by default).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Optional Redis for cross-replica rate limits and cache invalidation.",
    )
    metrics_enabled: bool = Field(default=True, description="Serve Prometheus /metrics.")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token a Prometheus scraper sends to /metrics (an admin key works "
        "too). Unset: only admin keys may read /metrics.",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Whether the server upgrades the database schema when it starts "
        "(safe with several replicas: migrations take a lock).",
    )
    usage_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often buffered usage events are written to the store (and on shutdown).",
    )

    # -- admin console -------------------------------------------------------------------
    console_enabled: bool = Field(
        default=False, description="Serve the admin console (web pages) at /console."
    )
    console_session_idle_minutes: float = Field(
        default=30.0, gt=0, description="A console session ends after this long without use."
    )
    console_session_max_hours: float = Field(
        default=12.0, gt=0, description="A console session ends this long after sign-in."
    )

    # -- governance (docs/governance.md) ----------------------------------------------
    rate_limit_backend: Literal["auto", "memory", "database", "redis"] = Field(
        default="auto",
        description="Where rate-limit and fit-slot counters live: auto = Redis when "
        "REDIS_URL is set, else the database (workers and replicas share it), memory for "
        "the memory store.",
    )
    budget_backend: Literal["database", "redis"] = Field(
        default="database",
        description="Where budget reservations are counted: the database (default) or Redis.",
    )
    redis_failure: Literal["fail_closed", "fall_back"] = Field(
        default="fail_closed",
        description="When Redis rate limits cannot be reached: refuse with 503 "
        "(fail_closed, default) or count in the database instead (fall_back).",
    )
    meter_credits: Literal["always", "budgeted"] = Field(
        default="always",
        description="Price every prediction with the upstream's estimate_cost (always) or "
        "only calls under a credit budget (budgeted).",
    )
    budget_webhook_url: str | None = Field(
        default=None, description="POST budget alerts here as signed JSON (optional)."
    )
    budget_webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of the X-TabPFN-Gateway-Signature header of webhooks.",
    )
    budget_webhook_attempts: int = Field(
        default=5, ge=1, le=20, description="Tries per webhook before it is given up."
    )
    budget_webhook_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First wait between webhook tries (doubles each time)."
    )

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "trusted_proxies",
        "egress_allowed_hosts",
        "egress_allowed_networks",
        "allowed_hosts",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies", "egress_allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR range") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        # Plain postgresql:// would pick psycopg2; we ship psycopg 3.
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                value = "postgresql+psycopg://" + value[len(plain) :]
                break
        # Checked here, so every command says which setting is wrong before it touches a
        # database (instead of a SQLAlchemy traceback or a missing driver module).
        check_database_url(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET"}:
            raise ValueError("unknown log level; use CRITICAL, ERROR, WARNING, INFO or DEBUG")
        return level

    def all_secret_keys(self) -> list[SecretStr]:
        """The current secret first, then the decrypt-only ones."""
        current = [self.secret_key] if self.secret_key is not None else []
        return current + list(self.previous_secret_keys)

    def trusted_proxy_networks(self) -> tuple[Any, ...]:
        """``trusted_proxies`` parsed (see ``tabpfn_gateway.netpolicy.client_address``)."""
        from tabpfn_gateway.netpolicy import parse_networks

        return parse_networks(self.trusted_proxies, f"{ENV_PREFIX}TRUSTED_PROXIES")

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite kind (a file, or the default)."""
        return self.database_url.startswith("sqlite")


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, mapping validation errors to ConfigurationError.

    The message names the environment variable (``TABPFN_GATEWAY_...``) and never echoes
    a secret's value.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "?"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{ENV_PREFIX}{field.upper()}: {message}")
        raise ConfigurationError("Invalid settings: " + "; ".join(problems)) from None
