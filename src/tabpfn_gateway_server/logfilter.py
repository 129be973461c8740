"""Keeps sealed upload tokens out of access logs (they open an upload URL until it expires)."""

from __future__ import annotations

import logging
import re

from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX
from tabpfn_gateway.logs import REDACTED

__all__ = ["UploadPathFilter", "install_access_log_filter", "redact_path"]

# The upload prefix however a client spells it (``//gateway//upload/``, any case: such a path
# is a 404, but the token in it still opens the upload), and everything after it up to the
# query, whatever its characters (padding, a doubled slash).
_UPLOAD_PATH = re.compile(
    "".join(
        "/+" if part == "/" else re.escape(part) for part in re.split("(/)", UPLOAD_PATH_PREFIX)
    )
    + r"[^\s?#\"]*",
    re.IGNORECASE,
)
# Anything else as long as a sealed token (a few hundred base64url characters) on any path.
_TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_\-=]{64,}")


def redact_path(text: str) -> str:
    """``text`` with upload tokens (and anything shaped like one) replaced by [REDACTED]."""
    text = _UPLOAD_PATH.sub(UPLOAD_PATH_PREFIX + REDACTED, text)
    return _TOKEN_SHAPED.sub(REDACTED, text)


class UploadPathFilter(logging.Filter):
    """Rewrites ``/gateway/upload/<token>`` to ``/gateway/upload/[REDACTED]`` in a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact_path(a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = redact_path(record.msg)
        return True


def install_access_log_filter() -> None:
    """Add the filter to uvicorn's access logger (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, UploadPathFilter) for f in access.filters):
        access.addFilter(UploadPathFilter())
