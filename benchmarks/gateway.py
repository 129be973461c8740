"""Gateway overhead: fit + predict_proba through the gateway vs. straight to FakeTabPFN, the
gateway's memory while a large upload streams through it, and small authenticated calls under
32 concurrent clients. Everything is served on loopback in separate processes.

Run: ``python benchmarks/gateway.py`` (``nox -s bench`` runs it); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

from tabpfn_gateway.protocol import ProtocolClient
from tabpfn_gateway.protocol.messages import (
    ClassifierConfig,
    ClassifierFitTaskConfig,
    ClassifierPredictParams,
    FileInfo,
    PrepareTrainSetUploadRequest,
)

TOKEN = "tok-benchmark-000001"
PROBAS = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))
CLI = str(Path(sys.executable).parent / "tabpfn-gateway")
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def serve(args: list[str], env: dict[str, str], path: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [CLI, *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(url, process, path)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def dataset(rows: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, cols))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return X, y


def fit_predict_seconds(client: ProtocolClient, rows: int, cols: int, seed: int) -> float:
    # Fresh data each repetition: both paths pay for the upload (no dedup shortcut).
    X, y = dataset(rows + rows // 4, cols, seed)
    started = time.perf_counter()
    fit = client.fit(X[:rows], y[:rows], ClassifierFitTaskConfig())
    client.predict(fit.fitted_train_set_id, X[rows:], PROBAS)
    return time.perf_counter() - started


def bench_end_to_end(
    direct: str, gateway: str, key: str, sizes: list[tuple[int, int]], repeats: int
) -> list[str]:
    lines = []
    with (
        ProtocolClient(direct, TOKEN, timeout=900) as straight,
        ProtocolClient(gateway, key, timeout=900) as through,
    ):
        fit_predict_seconds(straight, 200, 5, 0)  # warm both paths (imports, pools, caches)
        fit_predict_seconds(through, 200, 5, 1)
        for rows, cols in sizes:
            anchor, ours = [], []
            for rep in range(repeats):
                # Interleaved, so drift on a shared machine hits both alike.
                anchor.append(fit_predict_seconds(straight, rows, cols, 100 + rep))
                ours.append(fit_predict_seconds(through, rows, cols, 200 + rep))
            a, g = statistics.median(anchor), statistics.median(ours)
            lines.append(
                f"| fit + predict_proba {rows:,} x {cols} | {a:.3f} s | {g:.3f} s | "
                f"{g / a:.3f} | {(g - a) * 1000:+.0f} ms |"
            )
    return lines


class PeakRss:
    """Samples a process's RSS on a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stream_upload(gateway: str, key: str, size: int) -> float:
    """PUT ``size`` bytes through one gateway upload URL, generated chunk by chunk."""
    request = PrepareTrainSetUploadRequest(
        x_train_info=FileInfo(format="parquet", size_bytes=size),
        y_train_info=FileInfo(format="parquet", size_bytes=1),
    )
    prepared = httpx.post(
        f"{gateway}/tabpfn/prepare_train_set_upload",
        json=request.model_dump(mode="json", exclude_none=True),
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    prepared.raise_for_status()
    info = prepared.json()["x_train_info"]
    chunk = os.urandom(MB)

    def body() -> Iterator[bytes]:
        sent = 0
        while sent < size:
            part = chunk[: min(MB, size - sent)]
            sent += len(part)
            yield part

    started = time.perf_counter()
    answer = httpx.put(
        info["signed_urls"][0],
        content=body(),
        headers={**info["required_headers"], "Content-Length": str(size)},
        timeout=600,
    )
    answer.raise_for_status()
    return time.perf_counter() - started


def bench_memory(gateway: str, pid: int, key: str, sizes_mb: list[int]) -> list[str]:
    lines = []
    stream_upload(gateway, key, 4 * MB)  # warm the path
    for size_mb in sizes_mb:
        baseline = psutil.Process(pid).memory_info().rss
        with PeakRss(pid) as peak:
            seconds = stream_upload(gateway, key, size_mb * MB)
        growth = (peak.peak - baseline) / MB
        lines.append(
            f"| upload {size_mb} MB through the gateway | {baseline / MB:.0f} MB | "
            f"{peak.peak / MB:.0f} MB | {growth:+.1f} MB | {size_mb / seconds:.0f} MB/s |"
        )
    return lines


def latencies(
    base: str, bearer: str, fit_id: str, clients: int, calls: int
) -> tuple[float, list[float]]:
    def worker(_: int) -> list[float]:
        seen = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {bearer}"}) as http:
            for _ in range(calls):
                started = time.perf_counter()
                answer = http.post("/tabpfn/get_fit_status", json={"fitted_train_set_id": fit_id})
                seen.append(time.perf_counter() - started)
                answer.raise_for_status()
        return seen

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [t for batch in pool.map(worker, range(clients)) for t in batch]
    return time.perf_counter() - started, results


def bench_small_calls(direct: str, gateway: str, key: str, clients: int, calls: int) -> list[str]:
    X, y = dataset(200, 5, 7)
    with ProtocolClient(gateway, key) as through:
        fit_id = str(through.fit(X, y, ClassifierFitTaskConfig()).fitted_train_set_id)
    # The fake keeps fits per token; the gateway's fit was made upstream with TOKEN too.
    lines = []
    for label, base, bearer in (
        ("straight to FakeTabPFN", direct, TOKEN),
        ("through the gateway", gateway, key),
    ):
        latencies(base, bearer, fit_id, clients, 5)  # warm
        wall, seen = latencies(base, bearer, fit_id, clients, calls)
        seen.sort()
        p50 = seen[len(seen) // 2] * 1000
        p99 = seen[min(len(seen) - 1, int(len(seen) * 0.99))] * 1000
        lines.append(
            f"| get_fit_status, {clients} clients, {label} | {len(seen) / wall:.0f} /s | "
            f"{p50:.1f} ms | {p99:.1f} ms |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [(1_000, 20)] if args.quick else [(1_000, 20), (50_000, 50)]
    repeats = 1 if args.quick else args.repeats
    upload_sizes = [20, 50] if args.quick else [20, 200]
    calls = 20 if args.quick else 100

    work = Path(tempfile.mkdtemp(prefix="tpg-bench-gateway-"))
    env = {
        **os.environ,
        "TABPFN_GATEWAY_DATA_DIR": str(work),
        "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{work}/gateway.db",
        "TABPFN_GATEWAY_SECRET_KEY": "benchmark-secret-0123456789abcdef",
        "TABPFN_GATEWAY_LOG_LEVEL": "WARNING",
        "TABPFN_GATEWAY_MAX_UPLOAD_BYTES": str(1024 * MB),
    }
    try:
        with serve(["fake-upstream", "--token", TOKEN, "--log-level", "warning"], env, "/") as (
            direct,
            _,
        ):
            env["TABPFN_GATEWAY_UPSTREAM_URL"] = direct
            with serve(["serve"], env, "/healthz") as (gateway, gateway_pid):
                setup = httpx.post(
                    f"{gateway}/api/v1/auth/setup", json={"tabpfn_token": TOKEN}, timeout=60
                )
                setup.raise_for_status()
                key = setup.json()["api_key"]
                print(
                    f"# Gateway overhead (FakeTabPFN and the gateway on loopback, separate "
                    f"processes; medians of {repeats})\n"
                )
                print("| Scenario | Straight to FakeTabPFN | Through the gateway | Ratio | Added |")
                print("|---|---|---|---|---|")
                for line in bench_end_to_end(direct, gateway, key, sizes, repeats):
                    print(line, flush=True)
                print("\n| Upload | Gateway RSS before | Peak RSS | Growth | Throughput |")
                print("|---|---|---|---|---|")
                for line in bench_memory(gateway, gateway_pid, key, upload_sizes):
                    print(line, flush=True)
                print("\n| Small authenticated calls | Throughput | p50 | p99 |")
                print("|---|---|---|---|")
                for line in bench_small_calls(direct, gateway, key, 32, calls):
                    print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
