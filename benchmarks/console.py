"""Benchmark: the admin console's overview page, its weight and its server render time.

Page weight: the bytes of the overview's HTML, its stylesheet and its script (everything a
browser fetches for it; the chart is inline SVG, no image), raw and gzip-compressed.

Render time: GET /console/ (sign-in session, last 30 days), in process over the ASGI app on
the embedded SQLite store, with 30 days of usage from 4 teams and 8 keys at two volumes. The
anchors, in the same run: the admin API's JSON usage summary over the same data
(GET /api/v1/admin/usage/summary), and GET /healthz (the framework's floor). Printed as
medians and as ratios to the anchor.

    python benchmarks/console.py            # ~700 and ~20,000 events
    python benchmarks/console.py --quick    # ~700 events only
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.gateway import Gateway, LocalBus
from tabpfn_gateway.store import open_store
from tabpfn_gateway.store.records import UsageEvent, new_id, utcnow
from tabpfn_gateway.testing import FakeTabPFN
from tabpfn_gateway.testing.transport import ASGIBridgeTransport
from tabpfn_gateway_server import create_app

TOKEN = "tok-console-bench"
SAMPLES = 30


def seed(gateway: Gateway, events_per_key_day: int, days: int = 30) -> int:
    rng = random.Random(3)
    now = utcnow()
    keys = []
    for team_name in ("data-science", "risk-models", "marketing-analytics", "research"):
        team = gateway.admin.add_principal(team_name, "team")
        credential = gateway.admin.add_credential(team.id, TOKEN, f"{team_name} TabPFN")
        for label in ("notebooks", "batch"):
            keys.append(
                gateway.admin.create_key(team.id, credential.id, f"{team_name} {label}").record
            )
    events = [
        UsageEvent(
            id=new_id(),
            key_id=key.key_id,
            owner_id=key.owner_id,
            operation=rng.choice(["fit", "predict", "get_settings"]),
            status=429 if rng.random() < 0.05 else 200,
            latency_ms=rng.uniform(20, 900),
            rows=rng.randint(100, 20_000),
            bytes=rng.randint(10_000, 5_000_000),
            credits=rng.randint(1, 40),
            created_at=now - timedelta(days=day, minutes=rng.randint(0, 600)),
        )
        for day in range(days)
        for key in keys
        for _ in range(rng.randint(0, 2 * events_per_key_day))
    ]
    for start in range(0, len(events), 5000):
        gateway.store.record_usage(events[start : start + 5000])
    return len(events)


def median_ms(call: Callable[[], httpx.Response]) -> float:
    call()  # warm: templates compiled, connections open
    laps = []
    for _ in range(SAMPLES):
        start = time.perf_counter()
        answer = call()
        laps.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.status_code
    return statistics.median(laps)


def run(events_per_key_day: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tpg-console-bench-") as scratch:
        fake = FakeTabPFN(tokens=[TOKEN])
        settings = Settings(
            database_url=f"sqlite:///{scratch}/gateway.db",
            data_dir=Path(scratch) / "data",
            secret_key="console-benchmark-secret-0123456789",
            upstream_url="http://upstream.test",
            console_enabled=True,
            _env_file=None,  # type: ignore[call-arg]
        )
        migrate.upgrade(settings)
        gateway = Gateway.from_settings(
            settings,
            store=open_store(settings),
            upstream_transport=ASGIBridgeTransport(fake.app),
            async_upstream_transport=httpx.ASGITransport(app=fake.app),
            bus=LocalBus(),
        )
        try:
            events = seed(gateway, events_per_key_day)
            ops = gateway.admin.add_principal("platform", "team")
            admin_key = gateway.admin.create_key(ops.id, None, "bench", admin=True).plaintext
            app = create_app(settings, gateway=gateway)
            transport = ASGIBridgeTransport(app)
            with httpx.Client(transport=transport, base_url="http://gateway.test") as client:
                form = client.get("/console/sign-in").text
                token = re.search(r'name="csrf_token" value="([^"]+)"', form)
                assert token is not None
                client.post(
                    "/console/sign-in",
                    data={"csrf_token": token.group(1), "admin_key": admin_key},
                )
                html = client.get("/console/").content
                css = client.get("/console/static/console.css").content
                js = client.get("/console/static/console.js").content
                bearer = {"Authorization": f"Bearer {admin_key}"}
                figures = {
                    "events": float(events),
                    "html": float(len(html)),
                    "css": float(len(css)),
                    "js": float(len(js)),
                    "gzip": float(sum(len(gzip.compress(b)) for b in (html, css, js))),
                    "overview_ms": median_ms(lambda: client.get("/console/")),
                    "summary_ms": median_ms(
                        lambda: client.get("/api/v1/admin/usage/summary", headers=bearer)
                    ),
                    "health_ms": median_ms(lambda: client.get("/healthz")),
                }
            transport.close()
            return figures
        finally:
            gateway.close()
            gateway.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small volume only")
    args = parser.parse_args()
    volumes = [1] if args.quick else [1, 40]
    print("admin console overview (last 30 days), in process, SQLite")
    for volume in volumes:
        f = run(volume)
        total = f["html"] + f["css"] + f["js"]
        print(
            f"\n{f['events']:,.0f} usage events: page weight {total / 1000:.1f} kB "
            f"(HTML {f['html'] / 1000:.1f} kB, CSS {f['css'] / 1000:.1f} kB, "
            f"JS {f['js'] / 1000:.1f} kB; {f['gzip'] / 1000:.1f} kB gzip)"
        )
        print(
            f"  render GET /console/            {f['overview_ms']:8.1f} ms median\n"
            f"  anchor GET admin usage/summary  {f['summary_ms']:8.1f} ms median "
            f"(overview / summary = {f['overview_ms'] / f['summary_ms']:.1f}x)\n"
            f"  floor  GET /healthz             {f['health_ms']:8.1f} ms median "
            f"(overview / healthz = {f['overview_ms'] / f['health_ms']:.1f}x)"
        )


if __name__ == "__main__":
    main()
