"""Keeps sealed upload tokens out of access logs (they open an upload URL until it expires)."""

from __future__ import annotations

import logging
import re

from tabpfn_gateway.gateway import UPLOAD_PATH_PREFIX
from tabpfn_gateway.logs import REDACTED

__all__ = ["UploadPathFilter", "install_access_log_filter"]

_UPLOAD_TOKEN = re.compile(re.escape(UPLOAD_PATH_PREFIX) + r"[A-Za-z0-9_\-]+")


class UploadPathFilter(logging.Filter):
    """Rewrites ``/gateway/upload/<token>`` to ``/gateway/upload/[REDACTED]`` in a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _UPLOAD_TOKEN.sub(UPLOAD_PATH_PREFIX + REDACTED, a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = _UPLOAD_TOKEN.sub(UPLOAD_PATH_PREFIX + REDACTED, record.msg)
        return True


def install_access_log_filter() -> None:
    """Add the filter to uvicorn's access logger (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, UploadPathFilter) for f in access.filters):
        access.addFilter(UploadPathFilter())
