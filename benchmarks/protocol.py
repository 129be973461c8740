"""Benchmark: our ProtocolClient against tabpfn-client, fit + predict_proba, same FakeTabPFN.

FakeTabPFN runs in its own process (``tabpfn-gateway fake-upstream``, uvicorn on loopback).
Every measurement runs in a fresh child process, so imports, caches and the vendor's global
client never carry over: wall time from separate runs (median of several), memory from one
more run per case with tracemalloc (peak of the fit + predict_proba section) and the child's
max RSS. Every run uses fresh data and its own token, so the fake never dedups an upload.

    python benchmarks/protocol.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

SIZES = [(1_000, 20, 7), (50_000, 50, 5)]  # rows, columns, timed repetitions
QUICK_SIZES = [(1_000, 20, 2)]
TEST_ROWS = 1_000
TOKENS = [f"bench-{i}" for i in range(64)]


def child(client: str, rows: int, cols: int, seed: int, token: str, url: str, trace: bool) -> None:
    """One measurement: build data, fit, predict_proba; print JSON."""
    import numpy as np

    if client == "tabpfn-client":
        os.environ["TABPFN_CLIENT_API_URL"] = url
        os.environ["TABPFN_TOKEN"] = token
        from tabpfn_client import TabPFNClassifier
    else:
        from tabpfn_gateway.protocol import ProtocolClient
        from tabpfn_gateway.protocol.messages import (
            ClassifierConfig,
            ClassifierFitTaskConfig,
            ClassifierPredictParams,
        )

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, cols))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    X_test = X[:TEST_ROWS]
    # Built before the clock and the tracer start, like the vendor's (built at import).
    protocol = ProtocolClient(url, token) if client == "ours" else None
    if trace:
        import tracemalloc

        tracemalloc.start()
    started = time.perf_counter()
    fitted = None
    if client == "tabpfn-client":
        probas = TabPFNClassifier().fit(X, y).predict_proba(X_test)
    else:
        assert protocol is not None
        fitted = protocol.fit(X, y, ClassifierFitTaskConfig())
        config = ClassifierConfig(predict_params=ClassifierPredictParams(output_type="probas"))
        probas = protocol.predict(fitted.fitted_train_set_id, X_test, config).y_pred
    elapsed = time.perf_counter() - started
    # The fake's own training time, as it reports it (ours returns the timings).
    fit_s = float(fitted.timings["fit_s"]) if client == "ours" and fitted.timings else 0.0
    peak = 0
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert np.asarray(probas).shape == (len(X_test), 2)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"seconds": elapsed, "traced_peak": peak, "max_rss": rss_kib * 1024, "fit_s": fit_s}
        )
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_fake() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from tabpfn_gateway.cli import main; sys.exit(main())",
        "fake-upstream",
        "--port",
        str(port),
    ]
    for token in TOKENS:
        command += ["--token", token]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("fake-upstream did not start")


def measure(
    client: str, rows: int, cols: int, seed: int, token: str, url: str, trace: bool
) -> dict[str, float]:
    with Path(os.devnull).open("w") as devnull:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                client,
                str(rows),
                str(cols),
                str(seed),
                token,
                url,
                "1" if trace else "0",
            ],
            check=True,
            stdout=subprocess.PIPE,
            stderr=devnull,
            text=True,
            env={**os.environ, "HOME": os.environ.get("TMPDIR", "/tmp")},
        )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small size, two repetitions")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        client, rows, cols, seed, token, url, trace = args.child
        child(client, int(rows), int(cols), int(seed), token, url, trace == "1")
        return

    process, url = start_fake()
    tokens = iter(TOKENS)
    seed = 0
    rows_out = []
    try:
        for rows, cols, repetitions in QUICK_SIZES if args.quick else SIZES:
            clients = ("tabpfn-client", "ours")
            # Warm-up, discarded: the fake's first fit pays its own lazy imports.
            for client in clients:
                seed += 1
                measure(client, rows, cols, seed, next(tokens), url, trace=False)
            times: dict[str, list[float]] = {client: [] for client in clients}
            fake_fits: list[float] = []
            for repetition in range(repetitions):
                # Alternate who goes first, so drift on a shared machine hits both alike.
                for client in clients if repetition % 2 == 0 else clients[::-1]:
                    seed += 1
                    run = measure(client, rows, cols, seed, next(tokens), url, trace=False)
                    times[client].append(run["seconds"])
                    if client == "ours":
                        fake_fits.append(run["fit_s"])
            figures: dict[str, dict[str, float]] = {}
            for client in clients:
                seed += 1
                memory = measure(client, rows, cols, seed, next(tokens), url, trace=True)
                figures[client] = {
                    "median_s": statistics.median(times[client]),
                    "traced_mb": memory["traced_peak"] / 2**20,
                    "rss_mb": memory["max_rss"] / 2**20,
                    "runs": repetitions,
                }
            figures["fake"] = {"fit_s": statistics.median(fake_fits)}
            rows_out.append((f"{rows:,} x {cols}", figures))
    finally:
        process.terminate()
        process.wait(timeout=30)

    header = (
        f"{'size':<14}{'client':<16}{'median s':>10}{'runs':>6}"
        f"{'peak traced MB':>16}{'max RSS MB':>12}"
    )
    print("fit + predict_proba (1,000 test rows), FakeTabPFN on loopback, one child per run")
    print(header)
    print("-" * len(header))
    for size, figures in rows_out:
        for client in ("tabpfn-client", "ours"):
            f = figures[client]
            print(
                f"{size:<14}{client:<16}{f['median_s']:>10.3f}{f['runs']:>6}"
                f"{f['traced_mb']:>16.1f}{f['rss_mb']:>12.1f}"
            )
        vendor, mine = figures["tabpfn-client"], figures["ours"]
        print(
            f"{size:<14}{'ratio ours/vendor':<16}{mine['median_s'] / vendor['median_s']:>10.2f}"
            f"{'':>6}{mine['traced_mb'] / vendor['traced_mb']:>16.2f}"
            f"{mine['rss_mb'] / vendor['rss_mb']:>12.2f}"
        )
    for size, figures in rows_out:
        print(
            f"FakeTabPFN's own fit of {size} (median fit_s it reports): "
            f"{figures['fake']['fit_s']:.3f} s"
        )


if __name__ == "__main__":
    main()
