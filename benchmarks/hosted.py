"""Benchmark: tabpfn_client.hosted straight to a container vs through the gateway's POST /predict.

The fake container (``tabpfn-gateway fake-upstream --hosted``) and the gateway
(``tabpfn-gateway serve``, SQLite, one worker, a hosted credential and a key made with the CLI)
each run in their own process on loopback. The unmodified ``tabpfn_client.hosted``
TabPFNClassifier fits and predicts (``predict_proba``) at 1,000 x 20 and 50,000 x 50, inline
JSON and multipart Parquet, alternating direct and gateway runs so drift hits both alike; the
median wall time of each is printed with the gateway / direct ratio. The gateway's memory is
its peak RSS (VmHWM) after warming up with the small payload and after the large ones: flat
means the growth is a small fraction of the body it streamed.

    python benchmarks/hosted.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

SIZES = [(1_000, 20, 200, 5), (50_000, 50, 1_000, 3)]  # rows, columns, test rows, repetitions
QUICK_SIZES = [(1_000, 20, 200, 2), (10_000, 20, 500, 1)]
FORMATS = ("json", "parquet")
BEARER = "bench-container-token"
CLI = [sys.executable, "-c", "import sys; from tabpfn_gateway.cli import main; sys.exit(main())"]
SECRET = "bench-secret-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [*CLI, *argv],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"tabpfn-gateway {' '.join(argv)} failed: {done.stderr}")
    return done.stdout


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited before serving")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_once(endpoint: str, api_key: str, fmt: str, data: tuple[np.ndarray, ...]) -> float:
    from tabpfn_client.hosted import TabPFNClassifier

    X, y, X_test = data
    clf = TabPFNClassifier(endpoint_url=endpoint, api_key=api_key, payload_format=fmt)
    started = time.perf_counter()
    clf.fit(X, y)
    probas = clf.predict_proba(X_test)
    elapsed = time.perf_counter() - started
    clf._http_client().close()  # the estimator keeps it open otherwise
    assert probas.shape[0] == X_test.shape[0]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES

    with tempfile.TemporaryDirectory() as tmp:
        container_port, gateway_port = free_port(), free_port()
        env = {
            **os.environ,
            "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/gateway.db",
            "TABPFN_GATEWAY_DATA_DIR": f"{tmp}/data",
            "TABPFN_GATEWAY_SECRET_KEY": SECRET,
            "TABPFN_GATEWAY_LOG_LEVEL": "WARNING",
            "TABPFN_GATEWAY_MAX_UPLOAD_BYTES": str(4 * 1024**3),
        }
        container = subprocess.Popen(
            [*CLI, "fake-upstream", "--hosted",
             "--port", str(container_port), "--token", BEARER],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        gateway: subprocess.Popen[bytes] | None = None
        try:
            direct = f"http://127.0.0.1:{container_port}/predict"
            wait_for(f"http://127.0.0.1:{container_port}/health", container)
            cli(env, "db", "upgrade")
            cli(env, "principals", "add", "bench", "--kind", "team")
            cli(
                env, "credentials", "add", "--owner", "bench", "--label", "box", "--kind",
                "hosted", "--endpoint", direct, "--token-stdin", stdin=BEARER,
            )  # fmt: skip
            key = cli(env, "keys", "create", "--owner", "bench", "--name", "bench", "--quiet")
            key = key.strip()
            gateway = subprocess.Popen(
                [*CLI, "serve", "--port",
                 str(gateway_port), "--no-migrate"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            via = f"http://127.0.0.1:{gateway_port}/predict"
            wait_for(f"http://127.0.0.1:{gateway_port}/healthz", gateway)

            print("tabpfn_client.hosted fit + predict_proba, median of N runs (direct | gateway)")
            print(f"{'size':>14} {'format':>8} {'body MB':>8} {'direct s':>9} {'gateway s':>10} "
                  f"{'ratio':>6}")  # fmt: skip
            rss_after_warmup: float | None = None
            for rows, cols, test_rows, repetitions in sizes:
                rng = np.random.default_rng(rows + cols)
                X = rng.normal(size=(rows, cols))
                y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
                data = (X, y, X[:test_rows])
                body_mb = (rows + test_rows) * cols * 20 / 1e6  # JSON text, about
                for fmt in FORMATS:
                    times: dict[str, list[float]] = {"direct": [], "gateway": []}
                    run_once(via, key, fmt, data)  # warm both paths up (imports, pools)
                    run_once(direct, BEARER, fmt, data)
                    for _ in range(repetitions):
                        times["direct"].append(run_once(direct, BEARER, fmt, data))
                        times["gateway"].append(run_once(via, key, fmt, data))
                    d = statistics.median(times["direct"])
                    g = statistics.median(times["gateway"])
                    print(f"{rows:>8,} x {cols:<3} {fmt:>8} {body_mb:>8.1f} {d:>9.3f} {g:>10.3f} "
                          f"{g / d:>6.3f}")  # fmt: skip
                if rss_after_warmup is None:
                    rss_after_warmup = peak_rss_mb(gateway.pid)
            assert rss_after_warmup is not None
            peak = peak_rss_mb(gateway.pid)
            largest = sizes[-1]
            body_mb = (largest[0] + largest[2]) * largest[1] * 20 / 1e6
            print()
            print(f"gateway peak RSS: {rss_after_warmup:.0f} MB after the small payloads, "
                  f"{peak:.0f} MB after ~{body_mb:.0f} MB JSON bodies: growth "
                  f"{peak - rss_after_warmup:.0f} MB ({(peak - rss_after_warmup) / body_mb:.2f} x "
                  "the body)")  # fmt: skip
        finally:
            for process in (gateway, container):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)


if __name__ == "__main__":
    main()
