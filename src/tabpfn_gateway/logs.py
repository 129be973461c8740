"""Logging setup (stdlib, stdout, level from settings) and the filter that redacts secrets."""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

__all__ = ["REDACTED", "RedactingFilter", "redact", "register_secret", "setup_logging"]

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


_configured = False


def setup_logging(level: str | int = "INFO", *, stream: Any = None, force: bool = False) -> None:
    """Configure the ``tabpfn_gateway`` loggers once: stdout, a plain format, redaction.

    The redacting filter sits on the handler, so records from every library that reach it are
    redacted, httpx's request lines included. (It is also on the ``tabpfn_gateway`` logger,
    but logger filters do not apply to child loggers: other handlers you add yourself need
    ``RedactingFilter`` too.)
    """
    global _configured
    if _configured and not force:
        logging.getLogger().setLevel(level)
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
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
    _configured = True
