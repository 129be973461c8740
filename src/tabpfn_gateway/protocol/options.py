"""``FitOptions``: how a train set is fitted, in one object every ``fit`` takes."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypedDict

from tabpfn_gateway.protocol.messages import ThinkingConfig

__all__ = ["FitKeywords", "FitOptions"]


@dataclass(frozen=True)
class FitOptions:
    """How to fit, beyond the data and the task.

    Parameters
    ----------
    tabpfn_systems:
        The upstream systems to apply (the vendor's default: preprocessing and text).
    text_handling:
        How text columns are treated (``"advanced"``, the vendor's default, is not sent).
    thinking_config:
        The upstream's "thinking" settings, if any.
    api_mode:
        ``"sync"`` (``/fit``), ``"async"`` (``submit_fit_job`` then polls) or ``"auto"``
        (async above the upstream's ``use_above_trainset_size_bytes``).
    description:
        A note stored with the train set upstream.
    """

    tabpfn_systems: Sequence[str] = ("preprocessing", "text")
    text_handling: str = "advanced"
    thinking_config: ThinkingConfig | None = None
    api_mode: str = "auto"
    description: str | None = None

    @classmethod
    def resolve(cls, options: FitOptions | None, keywords: FitKeywords) -> FitOptions:
        """``options`` (default: the defaults) with the old keyword form applied on top; the
        keyword form warns: it will go in a later release."""
        resolved = options if options is not None else cls()
        if keywords:
            warnings.warn(
                "fit(..., "
                + ", ".join(f"{name}=" for name in keywords)
                + ") is deprecated; pass FitOptions(...) as the fourth argument instead.",
                DeprecationWarning,
                stacklevel=3,
            )
            resolved = replace(resolved, **keywords)
        return resolved


class FitKeywords(TypedDict, total=False):
    """The keyword form ``fit`` took before ``FitOptions`` (deprecated)."""

    tabpfn_systems: Sequence[str]
    text_handling: str
    thinking_config: ThinkingConfig | None
    api_mode: str
    description: str | None
