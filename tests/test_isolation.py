"""No global state: 16 threads and 16 asyncio tasks, one token each, at once, one FakeTabPFN.

And the reason this matters: ``tabpfn-client`` keeps one process-global token, so two threads
with two tokens both send the last one set (shown in a subprocess, asserted as a failure).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

import anyio
import numpy as np
from sklearn.datasets import make_classification

from tabpfn_gateway.protocol import AsyncProtocolClient, ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
)
from tabpfn_gateway.testing.fake import STORAGE_PREFIX, FakeTabPFN
from tabpfn_gateway.testing.fake_server import serve_in_thread

CALLERS = 16
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))
# What one caller's fit + predict sends to the API (uploads excluded: they carry no token).
API_CALLS_PER_CALLER = [
    "/tabpfn/prepare_train_set_upload",
    "/tabpfn/fit",
    "/tabpfn/prepare_test_set_upload",
    "/tabpfn/predict",
]


def caller_data(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    # Labels unique to the caller: the classes a prediction reports prove whose model it was.
    X, y = make_classification(120, 5, random_state=seed)
    classes = [f"{name}-no", f"{name}-yes"]
    return X, np.array(classes)[y], classes


def test_threads_and_tasks_each_send_their_own_token() -> None:
    tokens = [f"tok-thread-{i}" for i in range(CALLERS)]
    task_tokens = [f"tok-task-{i}" for i in range(CALLERS)]
    fake = FakeTabPFN(tokens + task_tokens)
    start = threading.Barrier(CALLERS + 1)
    outcomes: dict[str, list[str]] = {}
    failures: list[BaseException] = []

    with serve_in_thread(fake.app) as url:
        shared = ProtocolClient(url, retry_wait=0)  # one pool for every thread's token

        def thread_caller(index: int) -> None:
            token = tokens[index]
            try:
                X, y, _ = caller_data(token, index)
                client = shared.with_token(token)
                start.wait(timeout=60)
                fitted = client.fit(X, y, ClassifierFitTaskConfig())
                result = client.predict(fitted.fitted_train_set_id, X[:5], PROBAS)
                outcomes[token] = list(result.metadata["classes"])
            except BaseException as exc:  # reported below, with the thread's token
                failures.append(exc)

        async def task_callers() -> None:
            async with AsyncProtocolClient(url, retry_wait=0) as base:

                async def task_caller(index: int) -> None:
                    token = task_tokens[index]
                    X, y, _ = caller_data(token, 100 + index)
                    client = base.with_token(token)
                    fitted = await client.fit(X, y, ClassifierFitTaskConfig())
                    result = await client.predict(fitted.fitted_train_set_id, X[:5], PROBAS)
                    outcomes[token] = list(result.metadata["classes"])

                await anyio.to_thread.run_sync(start.wait, 60)
                async with anyio.create_task_group() as group:
                    for index in range(CALLERS):
                        group.start_soon(task_caller, index)

        def async_side() -> None:
            try:
                anyio.run(task_callers)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=thread_caller, args=(i,)) for i in range(CALLERS)]
        threads.append(threading.Thread(target=async_side))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        shared.close()

    assert failures == []
    everyone = tokens + task_tokens
    # Each caller got a prediction from its own model (its own labels)...
    assert outcomes == {token: [f"{token}-no", f"{token}-yes"] for token in everyone}
    # ...and the fake saw each caller's API calls exactly once, under the caller's token.
    api = [r for r in fake.requests if not r.path.startswith(STORAGE_PREFIX)]
    per_token = Counter((r.token, r.path) for r in api if r.path in API_CALLS_PER_CALLER)
    assert per_token == Counter({(t, p): 1 for t in everyone for p in API_CALLS_PER_CALLER})
    assert all(r.status == 200 for r in api)
    # Uploads go to signed URLs: no token at all, never someone else's.
    assert {r.token for r in fake.requests_to(STORAGE_PREFIX)} == {None}
    # Settings are fetched once per pool, whoever asked first.
    assert len(fake.requests_to("/tabpfn/get_settings")) == 2


VENDOR_TWO_THREADS = textwrap.dedent(
    """
    import threading
    import numpy as np
    import tabpfn_client
    from tabpfn_client import TabPFNClassifier

    first_set = threading.Event()
    second_set = threading.Event()
    errors = []

    def worker(token, wait_for, signal, seed):
        try:
            if wait_for is not None:
                wait_for.wait(30)
            tabpfn_client.set_access_token(token)
            signal.set()
            second_set.wait(30)  # both tokens are set before either thread fits
            rng = np.random.default_rng(seed)
            X = rng.normal(size=(40, 3))
            TabPFNClassifier().fit(X, (X[:, 0] > 0).astype(int))
        except BaseException as exc:
            errors.append(repr(exc))

    a = threading.Thread(target=worker, args=("tok-first", None, first_set, 1))
    b = threading.Thread(target=worker, args=("tok-second", first_set, second_set, 2))
    a.start(); b.start(); a.join(); b.join()
    print("errors:", errors)
    """
)


def test_tabpfn_client_shares_one_token_between_threads(tmp_path: Path) -> None:
    """Documents the vendor's global state: thread A's requests carry thread B's token."""
    fake = FakeTabPFN(["tok-first", "tok-second"])
    script = tmp_path / "two_threads.py"
    script.write_text(VENDOR_TWO_THREADS)
    with serve_in_thread(fake.app) as url:
        env = {
            **os.environ,
            "TABPFN_CLIENT_API_URL": url,
            "HOME": str(tmp_path),
        }
        env.pop("TABPFN_TOKEN", None)
        done = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "errors: []" in done.stdout
    fits = [r for r in fake.requests if r.path == "/tabpfn/fit"]
    assert len(fits) == 2  # both threads fitted...
    # ...and both sent the token set last: "tok-first" never reached the upstream.
    assert {r.token for r in fits} == {"tok-second"}
    assert "tok-first" not in {r.token for r in fake.requests}
