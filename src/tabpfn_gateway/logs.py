"""Logging setup (stdlib, stdout, text or JSON, level from settings), the trace id of the
current request, and the redaction of secrets in front of every handler."""

from __future__ import annotations

import logging
import re
import sys
import threading
from contextvars import ContextVar
from typing import Any, Literal

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "current_trace_id",
    "install_record_redaction",
    "redact",
    "register_secret",
    "setup_logging",
    "trace_id_var",
]

# The trace id of the request being answered (set by the server's request middleware); every
# log record created while it is set carries it as ``record.trace_id``.
trace_id_var: ContextVar[str | None] = ContextVar("tabpfn_gateway_trace_id", default=None)


def current_trace_id() -> str | None:
    """The trace id of the request this code runs for, if any."""
    return trace_id_var.get()


REDACTED = "[REDACTED]"

# Anything shaped like a gateway key (tpg_ / tpga_ prefix), a bearer credential, or a JWT
# (the shape TabPFN access tokens take). Broader than the exact key grammar on purpose: a
# truncated or mistyped key is still a secret.
_SECRET_PATTERNS = [
    re.compile(r"\btpga?_[0-9A-Za-z_]{8,}"),
    re.compile(r"(?i)(bearer\s+)[^\s,;\"']+"),
    re.compile(r"\beyJ[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]{5,}"),
    re.compile(r"(?i)((?:tabpfn_)?token[\"']?\s*[:=]\s*[\"']?)[^\s,;\"'}]{6,}"),
]

_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Redact this exact value from every log record from now on (e.g. a decrypted token).

    TabPFN tokens have no guaranteed shape, so the vault registers each one it decrypts.
    """
    if len(value) >= 6:
        with _known_lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every secret-shaped or registered secret replaced by [REDACTED]."""
    # Registered secrets first: a pattern rewriting part of one would leave the rest behind.
    if _known_secrets:
        with _known_lock:
            known = sorted(_known_secrets, key=len, reverse=True)
        for secret in known:
            if secret in text:
                text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (with its args applied) and exception text, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_tabpfn_redacted", False):
            return True  # redacted when made (install_record_redaction); keep its args apart
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, redacted, so handlers never print the raw one.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            # Formatted (and cached on the record) by a handler that ran before this filter.
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    cleaned = redact(text)
    # Objects are replaced only when their text held a secret (a URL, an exception...).
    return value if cleaned == text else cleaned


def _redact_in_place(record: logging.LogRecord) -> None:
    """Redact a record where it is made, keeping ``msg`` and ``args`` apart (formatters such as
    uvicorn's access formatter read the args one by one)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(arg) for arg in record.args)
    elif isinstance(record.args, dict):
        record.args = {key: _redact_arg(arg) for key, arg in record.args.items()}
    if record.args:
        # A secret can span the message and its args ("token=%s"): then give up the split.
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record
            record.msg, record.args = redact(f"{record.msg} {record.args}"), None
        else:
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
    record._tabpfn_redacted = True
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_record_redaction() -> None:
    """Redact every log record when it is created, and stamp it with the current trace id.

    A filter on a handler protects that handler only, and a filter on a logger does not
    apply to records of its child loggers; a record factory runs before any handler, so a
    handler someone adds later to one of our loggers (or to any other) never sees a secret.
    It runs only for records that pass their logger's level. Idempotent.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_tabpfn_gateway", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.trace_id = trace_id_var.get()
        _redact_in_place(record)
        return record

    redacting_factory._tabpfn_gateway = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)


LogFormat = Literal["text", "json"]


def _json_formatter() -> logging.Formatter:
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:
        from tabpfn_gateway.errors import ConfigurationError

        raise ConfigurationError(
            "TABPFN_GATEWAY_LOG_FORMAT=json needs python-json-logger: "
            "pip install 'tabpfn-gateway[server]'"
        ) from None

    class RedactingJsonFormatter(JsonFormatter):
        """One JSON object a line; every string value redacted (``extra=`` fields too)."""

        def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
            return {
                key: redact(value) if isinstance(value, str) else value
                for key, value in log_data.items()
                if not (key == "trace_id" and value is None) and key != "_tabpfn_redacted"
            }

    return RedactingJsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


_configured = False


def setup_logging(
    level: str | int = "INFO",
    *,
    stream: Any = None,
    force: bool = False,
    log_format: LogFormat = "text",
) -> None:
    """Configure logging once: one stdout handler on the root logger, text or JSON, redaction.

    ``log_format="json"`` writes one JSON object a line (``timestamp``, ``level``, ``logger``,
    ``message``, ``trace_id`` while a request is answered, ``exc_info``) with
    python-json-logger. Secrets are redacted when each record is created
    (``install_record_redaction``), so handlers added later, to any logger, get redacted
    records too; the handler also carries ``RedactingFilter`` for records made before.
    """
    global _configured
    if _configured and not force:
        logging.getLogger().setLevel(level)
        return
    install_record_redaction()
    handler = logging.StreamHandler(stream or sys.stdout)
    if log_format == "json":
        handler.setFormatter(_json_formatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_tabpfn_gateway", False):
            root.removeHandler(existing)
    handler._tabpfn_gateway = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    package_logger = logging.getLogger("tabpfn_gateway")
    if not any(isinstance(f, RedactingFilter) for f in package_logger.filters):
        package_logger.addFilter(RedactingFilter())
    # httpx logs every request URL at INFO; signed upload URLs are credentials of their own.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # alembic announces each of its autogenerate plugins at INFO on every migration run: noise
    # in a server's first lines (its "Running upgrade ..." lines stay).
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    _configured = True
