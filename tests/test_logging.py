"""The RedactingFilter: no gateway key, bearer token or registered secret reaches a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from tabpfn_gateway import logs
from tabpfn_gateway.logs import REDACTED, RedactingFilter, redact, register_secret, setup_logging

GATEWAY_KEY = "tpg_4f9a2b7c_Zq8xW3vK9mN2pL5rT7yU1aB4cD6eF8gH_0a1b2c3d"
ADMIN_KEY = "tpga_7e1d0c9b_Kk3Jj4Hh5Gg6Ff7Dd8Ss9Aa0Qq1Ww2Ee3Rr"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def log_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through a handler that carries the filter, as setup_logging sets up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tabpfn_gateway.tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.fixture(autouse=True)
def forget_registered_secrets() -> Iterator[None]:
    yield
    with logs._known_lock:
        logs._known_secrets.clear()


@pytest.mark.parametrize(
    "secret",
    [
        GATEWAY_KEY,
        ADMIN_KEY,
        GATEWAY_KEY[:20],  # a truncated key is still a secret
        JWT,
    ],
)
def test_secret_shaped_strings_are_redacted(secret: str) -> None:
    text = redact(f"calling with {secret} now")
    assert secret not in text
    assert REDACTED in text
    assert text.startswith("calling with ")


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Bearer abc.def-123_opaque",
        "headers={'authorization': 'bearer abc.def-123_opaque'}",
        "token=abc.def-123_opaque",
        '{"tabpfn_token": "abc.def-123_opaque"}',
        "access_token: abc.def-123_opaque",
    ],
)
def test_bearer_and_token_assignments_are_redacted(line: str) -> None:
    assert "abc.def-123_opaque" not in redact(line)


def test_harmless_text_is_left_alone() -> None:
    text = "fit of 1200 rows took 3.2 s for key id 4f9a2b7c (tpg_ prefix)"
    assert redact(text) == text


def test_registered_secret_without_a_shape_is_redacted() -> None:
    opaque = "plain-opaque-upstream-credential-91"
    assert redact(f"upstream said {opaque}") == f"upstream said {opaque}"
    register_secret(opaque)
    assert redact(f"upstream said {opaque}!") == f"upstream said {REDACTED}!"


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc abc") == "abc abc"


def test_registered_secret_is_redacted_whole_even_when_partly_key_shaped() -> None:
    secret = "tpg_abcdefgh12-tail-of-the-secret"
    register_secret(secret)
    assert "tail-of-the-secret" not in redact(f"value {secret}")


def test_message_arguments_are_redacted(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream
    logger.info("verifying %s for %s", GATEWAY_KEY, "alice")
    output = stream.getvalue()
    assert GATEWAY_KEY not in output
    assert "verifying [REDACTED] for alice" in output


def test_exception_tracebacks_are_redacted(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream
    register_secret("opaque-upstream-token-value")

    def fail() -> None:
        try:
            raise KeyError(f"no such key {GATEWAY_KEY}")
        except KeyError as inner:
            raise RuntimeError("upstream refused Bearer opaque-upstream-token-value") from inner

    try:
        fail()
    except RuntimeError:
        logger.exception("call failed with %s", ADMIN_KEY)
    output = stream.getvalue()
    assert "Traceback (most recent call last)" in output
    assert "RuntimeError" in output
    assert "KeyError" in output  # the chained cause is there, redacted too
    for secret in (GATEWAY_KEY, ADMIN_KEY, "opaque-upstream-token-value"):
        assert secret not in output


def test_traceback_cached_by_an_earlier_handler_is_redacted() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    record.exc_text = f"Traceback ...\nValueError: {GATEWAY_KEY}"
    RedactingFilter().filter(record)
    assert record.exc_text is not None
    assert GATEWAY_KEY not in record.exc_text


def test_stack_info_is_redacted(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream

    def deep(key: str) -> None:
        logger.warning("checking", stack_info=True)

    deep(GATEWAY_KEY)
    assert "Stack (most recent call last)" in stream.getvalue()
    assert GATEWAY_KEY not in stream.getvalue()


def test_a_broken_format_string_still_logs(log_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_stream
    logger.error("bad format %d %s", GATEWAY_KEY)
    output = stream.getvalue()
    assert "bad format" in output
    assert GATEWAY_KEY not in output


def test_setup_logging_redacts_every_library_reaching_its_handler() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    try:
        setup_logging("INFO", stream=stream, force=True)
        logging.getLogger("some.other.library").warning("sent Bearer %s", JWT)
        logging.getLogger("tabpfn_gateway.keys").info("made %s", GATEWAY_KEY)
        logging.getLogger("httpx").info("GET https://upload/signed?sig=credential")
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_tabpfn_gateway", False):
                root.removeHandler(handler)
        root.setLevel(level)
        logs._configured = False
    output = stream.getvalue()
    assert "sent Bearer [REDACTED]" in output
    assert "made [REDACTED]" in output
    assert JWT not in output
    assert GATEWAY_KEY not in output
    assert "signed?sig" not in output  # httpx request lines are below the level
