"""Helpers for tests of the self-hosted container protocol (tabpfn_client.hosted as a peer)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

Make = Callable[..., Any]


@pytest.fixture
def hosted() -> Iterator[Make]:
    """``hosted(TabPFNClassifier, endpoint_url=..., ...)``: an unmodified tabpfn_client.hosted
    estimator, kept alive until the test ends. They hold an httpx.Client they never close;
    it is closed here, so no ResourceWarning (an error in this suite) fires when the
    estimator is collected."""
    made: list[Any] = []

    def make(cls: type[Any], **kwargs: Any) -> Any:
        estimator = cls(**kwargs)
        made.append(estimator)
        return estimator

    yield make
    for estimator in made:
        # The estimator's own cached client (tabpfn_client.hosted's _http_client()).
        client = estimator.__dict__.get("_cached_client")
        if isinstance(client, httpx.Client):
            client.close()
    made.clear()


class InProcessContainer(httpx.ASGITransport):
    """``httpx.ASGITransport`` to a container app, where an exception the app raises on
    purpose (a dropped connection) reaches the client as the transport error a real dropped
    connection is, not as the app's own exception."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.HTTPError:
            raise
        except Exception as exc:
            raise httpx.RemoteProtocolError(
                f"The container dropped the connection ({type(exc).__name__}).", request=request
            ) from exc
