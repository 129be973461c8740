"""Deprecated: the SDK's gateway-key lookup moved to :mod:`tabpfn_gateway.api_key`.

"Credential" means a stored TabPFN token everywhere else, so the module that finds a gateway
key was renamed. This alias keeps old imports working for one minor release.
"""

from __future__ import annotations

import warnings

from tabpfn_gateway.api_key import *  # noqa: F403
from tabpfn_gateway.api_key import __all__ as __all__

warnings.warn(
    "tabpfn_gateway.credentials is deprecated; import from tabpfn_gateway.api_key instead.",
    DeprecationWarning,
    stacklevel=2,
)
