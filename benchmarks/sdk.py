"""Benchmark: the SDK against tabpfn-client, side by side in one run, printed as ratios.

1. Imports, each in a fresh interpreter, several runs, median: wall time of the import
   statement and the resident memory it adds (``/proc/self/statm`` after minus before), for
   ``import tabpfn_gateway``, ``from tabpfn_gateway import GatewayClassifier`` and the anchor
   ``import tabpfn_client``.
2. End to end, one run per size: fit + predict_proba of a classifier on ``make_classification``
   data (n train rows x d columns, plus n/5 test rows), each client in a fresh process, timed
   cold (import + first fit + predict_proba) and warm (the next fit + predict_proba there):
   - anchor: unmodified ``tabpfn-client`` straight to FakeTabPFN (loopback);
   - ``GatewayClassifier`` through a gateway server (loopback) to the same FakeTabPFN;
   - for reference, ``GatewayClassifier`` straight to FakeTabPFN (HTTPBackend, no gateway).
   FakeTabPFN and the gateway run as their own processes (``tabpfn-gateway fake-upstream``,
   ``tabpfn-gateway serve`` on SQLite), warmed up by one small unreported run per path. Each
   path uses its own token and data seed, so no path profits from another's upload dedup.

    python benchmarks/sdk.py            # 7 import runs; 1,000 x 20 and 50,000 x 50
    python benchmarks/sdk.py --quick    # 3 import runs; 1,000 x 20 only
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PY = sys.executable
CLI = shutil.which("tabpfn-gateway", path=str(Path(PY).parent)) or "tabpfn-gateway"

IMPORTS = {
    "import tabpfn_gateway": "import tabpfn_gateway",
    "from tabpfn_gateway import GatewayClassifier": "from tabpfn_gateway import GatewayClassifier",
    "import tabpfn_client (anchor)": "import tabpfn_client",
}

IMPORT_PROBE = """
import json, os, sys, time

def rss_mb():
    # Resident set now (Linux /proc): ru_maxrss is a high-water mark that the interpreter's
    # own start-up peak hides small imports under.
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

before = rss_mb()
start = time.perf_counter()
exec(sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": rss_mb() - before}))
"""

# One client run in a fresh process. "cold": the import, the first fit and predict_proba
# (what a script pays; tabpfn-client imports everything up front, the SDK on first use);
# "warm": a second fit + predict_proba on other data of the same size, in the same process.
# Data are made before the clock starts.
CLIENT_PROBE = """
import json, sys, time
from sklearn.datasets import make_classification
n, d, seed, kind = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def data(seed):
    X, y = make_classification(n_samples=n + n // 5, n_features=d,
                               n_informative=min(d // 2, 10), n_redundant=0, random_state=seed)
    return X[:n], y[:n], X[n:]

first, second = data(seed), data(seed + 1000)
start = time.perf_counter()
if kind == "tabpfn-client":
    from tabpfn_client import TabPFNClassifier as Classifier
    options = {}
else:
    from tabpfn_gateway import GatewayClassifier as Classifier
    options = {"progress": False}
timings = []
for X_train, y_train, X_test in (first, second):
    clf = Classifier(**options)
    clf.fit(X_train, y_train)
    proba = clf.predict_proba(X_test)
    assert proba.shape == (X_test.shape[0], 2)
    timings.append(time.perf_counter() - start)
    start = time.perf_counter()
print(json.dumps({"cold": timings[0], "warm": timings[1]}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_json(args: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_imports(runs: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    for label, statement in IMPORTS.items():
        samples = [run_json([PY, "-c", IMPORT_PROBE, statement]) for _ in range(runs)]
        results[label] = (
            statistics.median(s["seconds"] for s in samples),
            statistics.median(s["rss_mb"] for s in samples),
        )
    return results


def cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tabpfn-gateway {' '.join(args[:2])} failed: {done.stderr}")
    return done.stdout


def bench_end_to_end(sizes: list[tuple[int, int]]) -> list[dict[str, float]]:
    tokens = {"direct": "bench-direct", "gateway": "bench-gateway", "sdk-direct": "bench-sdk"}
    with tempfile.TemporaryDirectory() as tmp:
        base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TABPFN_GATEWAY_", "TABPFN_CLIENT_")) and k != "TABPFN_TOKEN"
        }
        base_env["HOME"] = tmp
        fake_port, gateway_port = free_port(), free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        fake_args = [CLI, "fake-upstream", "--port", str(fake_port)]
        for token in tokens.values():
            fake_args += ["--token", token]
        gateway_env = {
            **base_env,
            "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/gateway.db",
            "TABPFN_GATEWAY_DATA_DIR": tmp,
            "TABPFN_GATEWAY_SECRET_KEY": secrets.token_urlsafe(32),
            "TABPFN_GATEWAY_UPSTREAM_URL": fake_url,
            "TABPFN_GATEWAY_LOG_LEVEL": "WARNING",
        }
        with process(fake_args, base_env):
            wait_until_up(fake_url + "/")
            cli(["db", "upgrade"], gateway_env)
            cli(["principals", "add", "bench"], gateway_env)
            credential = json.loads(
                cli(
                    [
                        "credentials",
                        "add",
                        "--owner",
                        "bench",
                        "--label",
                        "bench",
                        "--token",
                        tokens["gateway"],
                        "--json",
                    ],
                    gateway_env,
                )
            )["id"]
            key = cli(
                [
                    "keys",
                    "create",
                    "--owner",
                    "bench",
                    "--name",
                    "bench",
                    "--credential",
                    credential,
                    "--quiet",
                ],
                gateway_env,
            ).strip()
            serve = [CLI, "serve", "--port", str(gateway_port), "--no-migrate"]
            with process(serve, gateway_env):
                wait_until_up(gateway_url + "/healthz")
                client_envs = {
                    "tabpfn-client": {
                        **base_env,
                        "TABPFN_CLIENT_API_URL": fake_url,
                        "TABPFN_TOKEN": tokens["direct"],
                    },
                    "via-gateway": {
                        **base_env,
                        "TABPFN_GATEWAY_URL": gateway_url,
                        "TABPFN_GATEWAY_API_KEY": key,
                    },
                    "sdk-direct": {
                        **base_env,
                        "TABPFN_GATEWAY_URL": fake_url,
                        "TABPFN_GATEWAY_API_KEY": tokens["sdk-direct"],
                    },
                }
                # Warm the servers up first (imports, first model fit in each process), so
                # no path pays for starting them; these runs are not reported.
                for warmup_seed, (label, env) in enumerate(client_envs.items(), start=100):
                    run_json([PY, "-c", CLIENT_PROBE, "200", "5", str(warmup_seed), label], env)
                rows = []
                for n, d in sizes:
                    row: dict[str, float] = {"n": n, "d": d}
                    for seed, (label, env) in enumerate(client_envs.items()):
                        result = run_json(
                            [PY, "-c", CLIENT_PROBE, str(n), str(d), str(seed), label], env
                        )
                        row[f"{label} cold"] = result["cold"]
                        row[f"{label} warm"] = result["warm"]
                    rows.append(row)
                return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, small size only")
    args = parser.parse_args()
    runs = 3 if args.quick else 7
    sizes = [(1_000, 20)] if args.quick else [(1_000, 20), (50_000, 50)]

    print(f"SDK imports (fresh interpreter each, median of {runs})")
    imports = bench_imports(runs)
    anchor_s, anchor_mb = imports["import tabpfn_client (anchor)"]
    print(f"  {'statement':46} {'seconds':>8} {'RSS MB':>7} {'time ratio':>10} {'RSS ratio':>9}")
    for label, (seconds, mb) in imports.items():
        print(
            f"  {label:46} {seconds:8.3f} {mb:7.1f} "
            f"{seconds / anchor_s:10.2f} {mb / anchor_mb:9.2f}"
        )

    print(
        "\nfit + predict_proba end to end, one run each (cold: import + first fit + predict in a"
        "\nfresh process; warm: the next fit + predict there); ratio = via gateway / tabpfn-client"
    )
    print(
        f"  {'train rows x cols':18} {'':5} {'tabpfn-client':>13} {'via gateway':>11} "
        f"{'ratio':>6} {'SDK direct':>10} {'ratio':>6}"
    )
    for row in bench_end_to_end(sizes):
        size = f"{int(row['n']):,} x {int(row['d'])}"
        for phase in ("cold", "warm"):
            anchor = row[f"tabpfn-client {phase}"]
            gateway = row[f"via-gateway {phase}"]
            direct = row[f"sdk-direct {phase}"]
            print(
                f"  {size:18} {phase:5} {anchor:12.2f}s {gateway:10.2f}s "
                f"{gateway / anchor:6.2f} {direct:9.2f}s {direct / anchor:6.2f}"
            )


if __name__ == "__main__":
    main()
