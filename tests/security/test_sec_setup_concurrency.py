"""Item 2 (rest) and 10: setup limits hold under concurrency, slow setups starve nothing, and
setup can neither take nor probe the principal names administrators choose."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway_support import add_admin_key, build_gateway, make_settings, redis_url_or_skip
from tabpfn_gateway import migrate
from tabpfn_gateway.gateway import Gateway
from tabpfn_gateway.store import open_store
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway_server import create_app

pytestmark = pytest.mark.anyio

SETUP = "/api/v1/auth/setup"
USAGE = "/get_api_usage/"
GOOD = "tok-setup-good-0001"
# Deadlock guards only (never a measure of speed): a wait that cannot end fails the test.
GUARD_SECONDS = 30


class SlowUpstream:
    """FakeTabPFN behind a door: usage calls (setup's token check) wait until ``release``."""

    def __init__(self, fake: FakeTabPFN) -> None:
        self.fake = fake
        self.arrived = 0
        self._open = threading.Event()  # thread-safe: a worker thread's event loop may wait

    def release(self) -> None:
        self._open.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == USAGE:
            self.arrived += 1
            while not self._open.is_set():
                await anyio.sleep(0.01)
        await self.fake.app(scope, receive, send)


@dataclass
class Setup:
    gateway: Gateway
    app: Any
    fake: FakeTabPFN
    upstream: SlowUpstream
    admin_key: str

    def client(self, address: str | None = None) -> httpx.AsyncClient:
        """An async client whose requests come from ``address`` (a fresh one by default)."""
        address = address or fresh_address()
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=120)


def fresh_address() -> str:
    # Unique per test: Redis counters are shared with every other run on this machine.
    return f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@contextlib.contextmanager
def build(tmp_path: Path, database_url: str, **overrides: Any) -> Iterator[Setup]:
    settings = make_settings(tmp_path, database_url, **overrides)
    migrate.upgrade(settings)
    fake = FakeTabPFN(tokens=[GOOD])
    upstream = SlowUpstream(fake)
    gateway = build_gateway(settings, upstream, store=open_store(settings))
    app = create_app(settings, gateway=gateway)
    try:
        yield Setup(gateway, app, fake, upstream, add_admin_key(gateway))
    finally:
        gateway.close()
        gateway.store.close()


async def post_setups(
    client: httpx.AsyncClient,
    bodies: list[dict[str, Any]],
    answers: list[httpx.Response] | None = None,
) -> list[httpx.Response]:
    """All of ``bodies`` posted at once; their answers as they come (also into ``answers``)."""
    answers = answers if answers is not None else []

    async def one(body: dict[str, Any]) -> None:
        answers.append(await client.post(SETUP, json=body))

    async with anyio.create_task_group() as group:
        for body in bodies:
            group.start_soon(one, body)
    return answers


async def wait_for(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(GUARD_SECONDS):
        while not condition():
            await anyio.sleep(0.01)


def statuses(answers: list[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
    return counts


@pytest.fixture
def sqlite_setup(tmp_path: Path) -> Iterator[Setup]:
    with build(tmp_path, f"sqlite:///{tmp_path}/gateway.db", setup_concurrency=100) as setup:
        yield setup


async def _forty_failed_setups_reach_the_upstream_at_most_ten_times(setup: Setup) -> None:
    answers: list[httpx.Response] = []
    guesses = [{"tabpfn_token": f"tok-guess-{i}"} for i in range(40)]
    async with setup.client() as client, anyio.create_task_group() as group:
        group.start_soon(post_setups, client, guesses, answers)
        # Every attempt is either waiting on the upstream or answered before any is let
        # through: before the fix all forty were waiting there.
        try:
            await wait_for(lambda: setup.upstream.arrived + len(answers) == 40)
        finally:
            setup.upstream.release()
    assert statuses(answers) == {401: 10, 429: 30}
    assert len(setup.fake.requests_to(USAGE)) == 10
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["error_code"] == "TOO_MANY_ATTEMPTS"
            assert int(answer.headers["Retry-After"]) >= 1
    await setup.gateway.close_async_upstream()


async def test_concurrent_failed_setups_reach_the_upstream_at_most_limit_times(
    sqlite_setup: Setup,
) -> None:
    await _forty_failed_setups_reach_the_upstream_at_most_ten_times(sqlite_setup)


async def test_concurrent_failed_setups_are_limited_with_redis_too(tmp_path: Path) -> None:
    url = redis_url_or_skip()
    with build(
        tmp_path, f"sqlite:///{tmp_path}/gateway.db", setup_concurrency=100, redis_url=url
    ) as setup:
        await _forty_failed_setups_reach_the_upstream_at_most_ten_times(setup)


async def test_setups_that_end_in_5xx_are_counted(tmp_path: Path) -> None:
    with build(tmp_path, f"sqlite:///{tmp_path}/gateway.db", setup_attempts_per_minute=3) as setup:
        setup.upstream.release()
        setup.fake.fail_next(3, status=500, path=USAGE)
        async with setup.client() as client:
            answers = [await client.post(SETUP, json={"tabpfn_token": GOOD}) for _ in range(3)]
            assert [a.status_code for a in answers] == [503, 503, 503]
            assert {a.json()["error_code"] for a in answers} == {"UPSTREAM_UNAVAILABLE"}
            # A good token now, and the upstream well again: the address has used its three.
            limited = await client.post(SETUP, json={"tabpfn_token": GOOD})
        assert limited.status_code == 429, limited.text
        assert limited.json()["error_code"] == "TOO_MANY_ATTEMPTS"
        assert len(setup.fake.requests_to(USAGE)) == 3
        await setup.gateway.close_async_upstream()


async def test_an_admin_call_completes_while_sixty_setups_hang_upstream(
    sqlite_setup: Setup,
) -> None:
    setup = sqlite_setup
    results: list[httpx.Response] = []
    admin_headers = {"Authorization": f"Bearer {setup.admin_key}"}
    async with anyio.create_task_group() as group:

        async def one_setup(index: int) -> None:
            # One address each: the per-address limit is not what this test is about.
            async with setup.client() as client:
                results.append(await client.post(SETUP, json={"tabpfn_token": f"tok-x-{index}"}))

        for index in range(60):
            group.start_soon(one_setup, index)
        try:
            await wait_for(lambda: setup.upstream.arrived == 60)
            # Sixty setups wait on the upstream; before the fix each held one of the 40
            # worker threads, and the admin call below waited behind them (here: for ever).
            async with setup.client() as admin:
                with anyio.fail_after(GUARD_SECONDS):
                    keys = await admin.get("/api/v1/admin/keys", headers=admin_headers)
            assert keys.status_code == 200, keys.text
            assert results == []  # every setup is still pending
        finally:
            setup.upstream.release()
    assert statuses(results) == {401: 60}
    await setup.gateway.close_async_upstream()


async def test_concurrent_setups_past_the_bound_are_told_to_retry(tmp_path: Path) -> None:
    with build(tmp_path, f"sqlite:///{tmp_path}/gateway.db", setup_concurrency=4) as setup:
        results: list[httpx.Response] = []
        async with anyio.create_task_group() as group:

            async def one_setup(index: int) -> None:
                async with setup.client() as client:
                    results.append(
                        await client.post(SETUP, json={"tabpfn_token": f"tok-y-{index}"})
                    )

            for index in range(4):
                group.start_soon(one_setup, index)
            try:
                await wait_for(lambda: setup.upstream.arrived == 4)
                for index in range(4, 10):
                    group.start_soon(one_setup, index)
                await wait_for(lambda: len(results) == 6)
            finally:
                setup.upstream.release()
        assert statuses(results) == {503: 6, 401: 4}
        for answer in results:
            if answer.status_code == 503:
                assert answer.json()["error_code"] == "SETUP_BUSY"
                assert int(answer.headers["Retry-After"]) >= 1
        assert setup.upstream.arrived == 4
        await setup.gateway.close_async_upstream()


async def test_successful_setups_per_address_are_limited(tmp_path: Path) -> None:
    with build(
        tmp_path,
        f"sqlite:///{tmp_path}/gateway.db",
        setup_successes_per_hour=2,
        setup_concurrency=100,
    ) as setup:
        setup.upstream.release()
        address = fresh_address()
        async with setup.client(address) as client:
            answers = await post_setups(client, [{"tabpfn_token": GOOD} for _ in range(6)])
        assert statuses(answers) == {201: 2, 429: 4}
        assert len(setup.fake.requests_to(USAGE)) == 2
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["error_code"] == "TOO_MANY_ATTEMPTS"
        assert int(refused.headers["Retry-After"]) >= 1
        # Another address is not affected.
        async with setup.client() as other:
            assert (await other.post(SETUP, json={"tabpfn_token": GOOD})).status_code == 201
        await setup.gateway.close_async_upstream()


async def test_setup_can_neither_take_nor_probe_an_admin_name(tmp_path: Path, db_url: str) -> None:
    with build(tmp_path, db_url) as setup:
        setup.upstream.release()
        admin = {"Authorization": f"Bearer {setup.admin_key}"}
        async with setup.client() as client:
            taken = await client.post(
                "/api/v1/admin/principals", json={"name": "carol"}, headers=admin
            )
            assert taken.status_code == 201, taken.text

            first = await client.post(SETUP, json={"tabpfn_token": GOOD, "name": "data-team"})
            assert first.status_code == 201, first.text
            name = first.json()["principal_name"]
            assert name.startswith("setup:data-team-")
            assert name != "data-team"

            # The admin still gets the name it meant to use.
            ops = await client.post(
                "/api/v1/admin/principals", json={"name": "data-team"}, headers=admin
            )
            assert ops.status_code == 201, ops.text

            # Existing names (an admin's, another setup's) answer like new ones: no probing.
            for wanted in ("carol", "data-team", "data-team"):
                again = await client.post(SETUP, json={"tabpfn_token": GOOD, "name": wanted})
                assert again.status_code == 201, again.text
                assert again.json()["principal_name"].startswith(f"setup:{wanted}-")
            # An admin cannot pick a name in setup's namespace either.
            squat = await client.post(
                "/api/v1/admin/principals", json={"name": name}, headers=admin
            )
            assert squat.status_code in (400, 422), squat.text
            listed = await client.get("/api/v1/admin/principals?limit=100", headers=admin)
        names = [p["name"] for p in listed.json()["items"]]
        assert names.count("carol") == 1
        assert names.count("data-team") == 1
        assert len([n for n in names if n.startswith("setup:")]) == 4
        await setup.gateway.close_async_upstream()
