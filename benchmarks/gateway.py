"""Gateway overhead, in one run: small authenticated calls under load with wrk (FakeTabPFN
directly, a bare Starlette + aiohttp forwarding route, nginx, the gateway with 1 and 2 workers,
at 1, 8 and 32 connections), the unmodified tabpfn-client's fit + predict_proba directly and
through each proxy (with the time each adds to every HTTP call), and the gateway's memory while
a large upload streams through it. Every server runs in its own process on loopback.

Run: ``python benchmarks/gateway.py`` (``nox -s bench`` runs it); ``--quick`` for a smoke run.
Needs ``wrk`` (Debian package ``wrk``); nginx (``nginx-light``) is measured when installed, as
what a proxy hop costs when the proxy is not Python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tabpfn_gateway.protocol.messages import FileInfo, PrepareTrainSetUploadRequest

TOKEN = "tok-benchmark-000001"  # wrk's and the gateway's credential
DIRECT_TOKEN = "tok-benchmark-000002"  # tabpfn-client straight to FakeTabPFN
BARE_TOKEN = "tok-benchmark-000003"  # tabpfn-client through the bare route
NGINX_TOKEN = "tok-benchmark-000004"  # tabpfn-client through nginx
CLI = str(Path(sys.executable).parent / "tabpfn-gateway")
HERE = Path(__file__).resolve().parent
MB = 1024 * 1024
SMALL_CALL = "/get_api_usage/"
REPEATS = 5  # tabpfn-client fit + predict_proba per child process and round


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
def serve(command: list[str], env: dict[str, str], path: str) -> Iterator[tuple[str, int]]:
    """Run a server (``command`` gets ``--port``); yield its URL and pid."""
    port = free_port()
    with running([*command, "--port", str(port)], env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process, path)
        yield url, process.pid


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str] | None) -> Iterator[subprocess.Popen[bytes]]:
    """A process, quiet, stopped (then killed if it lingers) when the block ends."""
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (uvicorn workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


# -- small calls under load (wrk) ------------------------------------------------------------


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float  # CPU of the server under test per request
    upstream_cpu_us: float  # FakeTabPFN's CPU per request (0 when it is the server)
    wrk_cpu_us: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"cannot read a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    bearer: str,
    connections: int,
    seconds: float,
    script: Path,
    pid: int,
    upstream_pid: int | None,
) -> Load:
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.headers["Authorization"] = "Bearer {bearer}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
    ]
    before = cpu_seconds(pid)
    before_up = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    before_wrk = _children_cpu()
    out = subprocess.run(
        [*command, url + SMALL_CALL], capture_output=True, text=True, check=True
    ).stdout
    wrk_cpu = _children_cpu() - before_wrk
    after = cpu_seconds(pid)
    after_up = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    count = max(requests, 1)
    return Load(
        rps=rps,
        p50_ms=p50,
        p99_ms=p99,
        requests=requests,
        errors=int(errors_match.group(1)) if errors_match else 0,
        cpu_us=(after - before) * 1e6 / count,
        upstream_cpu_us=(after_up - before_up) * 1e6 / count,
        wrk_cpu_us=wrk_cpu * 1e6 / count,
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


# -- the unmodified tabpfn-client, end to end -------------------------------------------------

CLIENT_SCRIPT = textwrap.dedent(
    """
    import collections, json, sys, time
    import httpx
    import numpy as np
    from tabpfn_client import TabPFNClassifier

    rows, cols, repeats, seed = (int(v) for v in sys.argv[1:5])
    calls = collections.defaultdict(list)
    send = httpx.Client.send

    # FakeTabPFN's own computing in a call, from the timings its answer carries.
    OWN = {
        "/tabpfn/fit": ("fit_s", "train_set_transform_s"),
        "/tabpfn/predict": ("predict_s", "test_set_transform_s"),
    }

    def timed_send(self, request, **kwargs):
        # Each HTTP call the client makes, timed on its side: where an added ms goes.
        started = time.perf_counter()
        response = send(self, request, **kwargs)
        elapsed = time.perf_counter() - started
        name = request.url.path
        if request.method == "PUT":
            # An X (features, tens of KB or more) or a y (one column, about 2 KB).
            large = int(request.headers.get("content-length", 0)) > 16384
            name = "PUT (upload of an X)" if large else "PUT (upload of a y)"
        calls[name].append(elapsed)
        if name in OWN and response.status_code == 200:
            # The model's work varies by ms from run to run whatever the path: the call's
            # time without it is what a proxy can add to.
            timings = response.json().get("timings") or {}
            own = sum(timings.get(field) or 0.0 for field in OWN[name])
            calls[f"FakeTabPFN's own computing in {name}"].append(own)
            calls[f"{name}, less FakeTabPFN's own computing"].append(elapsed - own)
        return response

    httpx.Client.send = timed_send

    def data(seed):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(rows + rows // 4, cols))
        y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
        return X[:rows], y[:rows], X[rows:]

    def once(seed):
        X, y, X_test = data(seed)
        started = time.perf_counter()
        TabPFNClassifier(n_estimators=1).fit(X, y).predict_proba(X_test)
        return time.perf_counter() - started

    once(seed)  # warm: imports, connections, the client's own init round trips
    calls.clear()
    totals = [once(seed + 1 + i) for i in range(repeats)]
    print(json.dumps({"totals": totals, "calls": calls}))
    """
)


@dataclass
class ClientRuns:
    """tabpfn-client's fit + predict_proba times on one path, and each HTTP call's."""

    totals: list[float] = field(default_factory=list)
    calls: dict[str, list[float]] = field(default_factory=dict)

    def add(self, url: str, token: str, rows: int, cols: int, seed: int, home: Path) -> None:
        env = {
            **os.environ,
            "TABPFN_CLIENT_API_URL": url,
            "TABPFN_TOKEN": token,
            "HOME": str(home),  # nothing of the vendor's lands in the real home
        }
        args = [str(rows), str(cols), str(REPEATS), str(seed)]
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        runs = json.loads(done.stdout.strip().splitlines()[-1])
        self.totals += runs["totals"]
        for name, seconds in runs["calls"].items():
            self.calls.setdefault(name, []).extend(seconds)


@dataclass
class ClientPath:
    """One way tabpfn-client reaches FakeTabPFN in the end-to-end runs."""

    label: str
    url: str
    token: str
    runs: ClientRuns = field(default_factory=ClientRuns)


# Calls whose time is mostly FakeTabPFN's own computing, which varies by ms from run to run
# whatever the path; the client script also records each without it (_LESS_OWN) and the
# computing alone (_OWN).
_COMPUTE = ("/tabpfn/fit", "/tabpfn/predict")
_LESS_OWN = ", less FakeTabPFN's own computing"
_OWN = "FakeTabPFN's own computing in "


def bench_end_to_end(
    direct: ClientPath, proxies: list[ClientPath], rows: int, cols: int, rounds: int, home: Path
) -> tuple[list[str], list[str], list[str]]:
    """The end-to-end rows, the per-call table's header and its rows. Every path fits and
    predicts the same data (a fit's time depends on it); each has its own upstream token, so
    FakeTabPFN's per-token deduplication never shortcuts an upload."""
    paths = [direct, *proxies]
    for i in range(rounds):
        # Child processes in turn, the order rotating, so drift on a shared machine hits all
        # alike; enough runs that the medians settle (a fit's own time varies by several ms).
        shift = i % len(paths)
        for path in paths[shift:] + paths[:shift]:
            path.runs.add(path.url, path.token, rows, cols, 1000 * i, home)
    what = f"tabpfn-client fit + predict_proba {rows:,} x {cols}"
    a = statistics.median(direct.runs.totals)
    totals = []
    for proxy in proxies:
        t = statistics.median(proxy.runs.totals)
        ratio = f"{t / a:.3f}"
        totals.append(
            f"| {what}, through {proxy.label} | {a * 1000:.0f} ms | {t * 1000:.0f} ms | "
            f"{f'**{ratio}**' if proxy.label == 'the gateway' else ratio} | "
            f"{(t - a) * 1000:+.1f} ms | {len(proxy.runs.totals)} |"
        )
    header = ["| call | per run | directly |", "|---|---:|---:|"]
    for proxy in proxies:
        header[0] += f" {proxy.label.removeprefix('the ')} adds |"
        header[1] += "---:|"
    per_call = []
    # Per proxy: every call as timed; and the same with fit and predict less FakeTabPFN's
    # own computing (what the proxy adds, without the model's drift between runs).
    summed = {p.label: [0.0, 0.0] for p in proxies}
    for name, direct_seconds in direct.runs.calls.items():
        theirs = statistics.median(direct_seconds)
        each = len(direct_seconds) / len(direct.runs.totals)
        cells = []
        for proxy in proxies:
            seconds = proxy.runs.calls.get(name)
            added = statistics.median(seconds) - theirs if seconds else float("nan")
            cells.append(f"{added * 1000:+.2f} ms")
            if name.startswith(_OWN):
                continue
            if not name.endswith(_LESS_OWN):
                summed[proxy.label][0] += each * added
            if name not in _COMPUTE:
                summed[proxy.label][1] += each * added
        row = f"| {name} | {each:g} | {theirs * 1000:.2f} ms | "
        per_call.append(row + " | ".join(cells) + " |")
    labels = ("all calls as timed", "all calls, FakeTabPFN's own computing left out")
    for index, label in enumerate(labels):
        cells = " | ".join(f"{summed[p.label][index] * 1000:+.1f} ms" for p in proxies)
        per_call.append(f"| {label} (one fit + predict_proba) | | | {cells} |")
    for proxy in proxies:
        # The end to end estimated from the calls' medians: the direct total plus what the
        # proxy adds to each call, FakeTabPFN's computing left out (it is the same work).
        added = summed[proxy.label][1]
        ratio = f"{(a + added) / a:.3f}"
        totals.append(
            f"| {what}, through {proxy.label}, from its calls (FakeTabPFN's own computing "
            f"left out) | {a * 1000:.0f} ms | {(a + added) * 1000:.0f} ms | "
            f"{f'**{ratio}**' if proxy.label == 'the gateway' else ratio} | "
            f"{added * 1000:+.1f} ms | {len(proxy.runs.totals)} |"
        )
    return totals, header, per_call


NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    upstream fake {{ server {upstream}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # FakeTabPFN signs upload URLs on the origin it is asked at; they are pointed at
            # this proxy on the way back, as the gateway and the bare route do.
            proxy_set_header Host {upstream};
            proxy_set_header Accept-Encoding "";
            proxy_request_buffering off;
            sub_filter_types application/json;
            sub_filter_once off;
            sub_filter "http://{upstream}" "http://127.0.0.1:{port}";
        }}
    }}
}}
"""


NGINX = "nginx (C, one worker)"


@contextlib.contextmanager
def nginx_proxy(upstream: str, work: Path) -> Iterator[tuple[str, int] | None]:
    """nginx forwarding to ``upstream`` (one worker, keep-alive upstream connections, uploads
    streamed): what a proxy hop costs when the proxy is not Python. None when nginx is not
    installed (Debian package ``nginx-light``)."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )
    if nginx is None:
        yield None
        return
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(work=work, port=port, upstream=upstream.removeprefix("http://"))
    )
    with running([nginx, "-c", str(conf), "-p", str(work)], None) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process, "/")
        yield url, process.pid


# -- the run ---------------------------------------------------------------------------------


def setup_key(gateway: str) -> str:
    setup = httpx.post(f"{gateway}/api/v1/auth/setup", json={"tabpfn_token": TOKEN}, timeout=60)
    setup.raise_for_status()
    return str(setup.json()["api_key"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, one round")
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk duration per cell")
    parser.add_argument("--rounds", type=int, default=6, help="tabpfn-client rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/gateway.py needs wrk (apt-get install wrk)")
    seconds = 2.0 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    connections = [1, 8, 32]
    upload_mb = 50 if args.quick else 200

    work = Path(tempfile.mkdtemp(prefix="tpg-bench-gateway-"))
    script = work / "post.lua"
    env = {
        **os.environ,
        "TABPFN_GATEWAY_DATA_DIR": str(work),
        "TABPFN_GATEWAY_DATABASE_URL": f"sqlite:///{work}/gateway.db",
        "TABPFN_GATEWAY_SECRET_KEY": "benchmark-secret-0123456789abcdef",
        "TABPFN_GATEWAY_LOG_LEVEL": "WARNING",
        "TABPFN_GATEWAY_MAX_UPLOAD_BYTES": str(1024 * MB),
    }
    fake_cmd = [CLI, "fake-upstream", "--log-level", "warning"]
    for token in (TOKEN, DIRECT_TOKEN, BARE_TOKEN, NGINX_TOKEN):
        fake_cmd += ["--token", token]
    uvicorn = [sys.executable, "-m", "uvicorn", "bare_proxy:app", "--app-dir", str(HERE)]
    uvicorn += ["--log-level", "warning", "--no-access-log"]
    try:
        with serve(fake_cmd, env, "/") as (direct, fake_pid):
            env["TABPFN_GATEWAY_UPSTREAM_URL"] = direct
            bare_env = {**env, "BARE_PROXY_UPSTREAM": direct}
            with (
                serve(uvicorn, bare_env, "/openapi.json") as (bare, bare_pid),
                serve([CLI, "serve"], env, "/healthz") as (gateway, gateway_pid),
                nginx_proxy(direct, work) as nginx,
            ):
                key = setup_key(gateway)
                targets = [
                    ("FakeTabPFN directly", direct, TOKEN, fake_pid, None),
                    ("bare Starlette + aiohttp route", bare, TOKEN, bare_pid, fake_pid),
                    ("gateway, 1 worker", gateway, key, gateway_pid, fake_pid),
                ]
                if nginx is not None:
                    targets.insert(2, (NGINX, nginx[0], TOKEN, nginx[1], fake_pid))
                results: dict[tuple[str, int], Load] = {}
                for _, url, bearer, pid, upstream in targets:
                    wrk(url, bearer, 8, 1, script, pid, upstream)  # warm: pools, caches
                for c in connections:
                    for label, url, bearer, pid, upstream in targets:
                        results[(label, c)] = wrk(url, bearer, c, seconds, script, pid, upstream)
                memory = bench_memory(gateway, gateway_pid, key, [upload_mb])
            with serve([CLI, "serve", "--workers", "2"], env, "/healthz") as (two, two_pid):
                label = "gateway, 2 workers"
                wrk(two, key, 8, 2, script, two_pid, fake_pid)  # warm both workers
                for c in connections:
                    results[(label, c)] = wrk(two, key, c, seconds, script, two_pid, fake_pid)
            with (
                serve([CLI, "serve"], env, "/healthz") as (gateway, _),
                serve(uvicorn, bare_env, "/openapi.json") as (bare, _),
                nginx_proxy(direct, work) as nginx,
            ):
                proxies = [ClientPath("the bare route", bare, BARE_TOKEN)]
                if nginx is not None:
                    proxies.append(ClientPath("nginx", nginx[0], NGINX_TOKEN))
                proxies.append(ClientPath("the gateway", gateway, key))
                end_to_end = bench_end_to_end(
                    ClientPath("direct", direct, DIRECT_TOKEN), proxies, 1_000, 20, rounds, work
                )
        print_report(results, connections, seconds, end_to_end, memory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def print_report(
    results: dict[tuple[str, int], Load],
    connections: list[int],
    seconds: float,
    end_to_end: tuple[list[str], list[str], list[str]],
    memory: list[str],
) -> None:
    labels = list(dict.fromkeys(label for label, _ in results))
    print(
        f"# Small authenticated calls: POST {SMALL_CALL} under wrk (1 thread, {seconds:g} s per "
        "cell), FakeTabPFN upstream\n"
    )
    print(
        "| what answered | conns | requests/s | p50 | p99 | server CPU/request | "
        "upstream CPU/request | wrk CPU/request | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in connections:
        for label in labels:
            r = results[(label, c)]
            upstream = f"{r.upstream_cpu_us:.0f} µs" if r.upstream_cpu_us else "-"
            print(
                f"| {label} | {c} | {r.rps:,.0f} | {r.p50_ms:.2f} ms | {r.p99_ms:.1f} ms | "
                f"{r.cpu_us:.0f} µs | {upstream} | {r.wrk_cpu_us:.0f} µs | {r.errors} |"
            )
    bare = "bare Starlette + aiohttp route"
    print("\n| ratio | " + " | ".join(f"{c} conn" for c in connections) + " |")
    print("|---|" + "---:|" * len(connections))
    rows = [
        ("gateway 1 worker ÷ bare route (throughput)", "gateway, 1 worker", bare, "rps"),
        ("gateway 2 workers ÷ bare route (throughput)", "gateway, 2 workers", bare, "rps"),
        (
            "gateway 2 workers ÷ 1 worker (throughput)",
            "gateway, 2 workers",
            "gateway, 1 worker",
            "rps",
        ),
        (
            "gateway 1 worker ÷ bare route (server CPU per request)",
            "gateway, 1 worker",
            bare,
            "cpu_us",
        ),
        ("bare route ÷ FakeTabPFN directly (throughput)", bare, "FakeTabPFN directly", "rps"),
    ]
    for name, top, bottom, measure in rows:
        cells = [
            getattr(results[(top, c)], measure) / getattr(results[(bottom, c)], measure)
            for c in connections
        ]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
    direct1 = results[("FakeTabPFN directly", 1)].p50_ms
    added = results[("gateway, 1 worker", 1)].p50_ms - direct1
    added_bare = results[(bare, 1)].p50_ms - direct1
    nginx = results.get((NGINX, 1))
    added_nginx = "" if nginx is None else f", nginx {(nginx.p50_ms - direct1) * 1000:+.0f} µs"
    print(
        f"\nAdded median latency at 1 connection, over FakeTabPFN directly: gateway "
        f"{added * 1000:+.0f} µs, bare route {added_bare * 1000:+.0f} µs{added_nginx}."
    )
    print(
        f"Load generator: wrk reached {results[('FakeTabPFN directly', 32)].rps:,.0f} requests/s "
        "straight to FakeTabPFN at 32 connections, far above any proxy row: it is not what "
        "limits them."
    )
    totals, header, per_call = end_to_end
    print("\n| end to end | directly | through the proxy | ratio | added | runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for line in totals:
        print(line)
    print(
        "\nThe first rows compare medians of the totals, which swing by several ms between runs "
        "with FakeTabPFN's own fit time; the rows 'from its calls' add to the direct total "
        "what the proxy adds to each call's median, FakeTabPFN's computing (from the timings "
        "in its answers) left out."
    )
    print(
        "\nEach HTTP call of one fit + predict_proba, timed by the client (median): directly, "
        "and what each proxy adds to it (the bare route: the floor for a Python proxy; nginx: "
        "for any proxy, when installed):\n"
    )
    for line in header:
        print(line)
    for line in per_call:
        print(line)
    print("\n| Upload | Gateway RSS before | Peak RSS | Growth | Throughput |")
    print("|---|---:|---:|---:|---:|")
    for line in memory:
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
