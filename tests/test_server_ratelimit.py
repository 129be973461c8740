"""Setup attempt limits: a sliding window per process, a shared window in Redis."""

from __future__ import annotations

import uuid

import pytest

from gateway_support import redis_url_or_skip
from tabpfn_gateway.errors import ConfigurationError, TooManyAttempts
from tabpfn_gateway_server.ratelimit import (
    MemoryAttemptLimiter,
    RedisAttemptLimiter,
    limiter_for,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_limiter_slides_its_window() -> None:
    clock = Clock()
    limiter = MemoryAttemptLimiter(2, window=60, clock=clock)
    limiter.check("10.0.0.1")
    limiter.failed("10.0.0.1")
    clock.now += 30
    limiter.failed("10.0.0.1")
    with pytest.raises(TooManyAttempts) as info:
        limiter.check("10.0.0.1")
    assert info.value.retry_after == 30  # until the first failure leaves the window
    limiter.check("10.0.0.2")  # other addresses are not affected
    clock.now += 30
    limiter.check("10.0.0.1")  # one failure left in the window: allowed again


def test_redis_limiter_is_shared_by_replicas() -> None:
    url = redis_url_or_skip()
    address = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:8]}"
    first, second = RedisAttemptLimiter(url, 3), RedisAttemptLimiter(url, 3)
    try:
        first.failed(address)
        second.failed(address)
        first.check(address)
        second.failed(address)
        # The third failure was counted by another replica, yet this one refuses too.
        with pytest.raises(TooManyAttempts) as info:
            first.check(address)
        assert info.value.retry_after is not None
        assert info.value.retry_after >= 1
    finally:
        first.close()
        second.close()


def test_limiter_choice_and_bad_urls() -> None:
    assert isinstance(limiter_for(None, 5), MemoryAttemptLimiter)
    with pytest.raises(ConfigurationError):
        limiter_for("not-a-redis-url", 5)


def test_memory_reservations_count_at_once_and_refunds_take_them_back() -> None:
    clock = Clock()
    limiter = MemoryAttemptLimiter(2, window=60, clock=clock)
    first = limiter.reserve("10.0.0.1")
    limiter.reserve("10.0.0.1")
    # Counted when reserved, before any outcome: a third concurrent attempt is refused.
    with pytest.raises(TooManyAttempts):
        limiter.reserve("10.0.0.1")
    limiter.refund(first)
    limiter.reserve("10.0.0.1")
    with pytest.raises(TooManyAttempts):
        limiter.check("10.0.0.1")
    clock.now += 61
    limiter.refund(first)  # long gone from the window: nothing to take back, no error
    limiter.reserve("10.0.0.1")


def test_redis_reservations_are_atomic_across_replicas() -> None:
    url = redis_url_or_skip()
    address = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:8]}"
    first = RedisAttemptLimiter(url, 2, name="test-reserve")
    second = RedisAttemptLimiter(url, 2, name="test-reserve")
    try:
        held = first.reserve(address)
        second.reserve(address)
        with pytest.raises(TooManyAttempts) as info:
            first.reserve(address)
        assert info.value.retry_after is not None
        assert info.value.retry_after >= 1
        second.refund(held)
        first.reserve(address)
        with pytest.raises(TooManyAttempts):
            second.reserve(address)
    finally:
        first.close()
        second.close()
