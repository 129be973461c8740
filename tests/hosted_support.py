"""Helpers for tests of the self-hosted container protocol (tabpfn_client.hosted as a peer)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

Make = Callable[..., Any]


@pytest.fixture
def hosted() -> Iterator[Make]:
    """``hosted(TabPFNClassifier, endpoint_url=..., ...)``: an unmodified tabpfn_client.hosted
    estimator, kept alive until the test ends. They hold an httpx.Client they never close;
    every one left open is closed here, so no ResourceWarning (an error in this suite) fires
    when the estimator is collected."""
    made: list[Any] = []

    def make(cls: type[Any], **kwargs: Any) -> Any:
        estimator = cls(**kwargs)
        made.append(estimator)
        return estimator

    yield make
    for obj in gc.get_objects():
        if isinstance(obj, httpx.Client) and not obj.is_closed:
            obj.close()
    made.clear()
