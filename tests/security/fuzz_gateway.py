"""Schema-driven fuzzing of a running gateway (schemathesis), with an admin key and with an
inference key: ``nox -s fuzz`` runs it. Prints, per key, the cases run, the 5xx answers and
the answers that contradict the OpenAPI document (undocumented status codes included).

Not a pytest module (slow, and schemathesis drives the requests): a script with real parts,
the gateway app over FakeTabPFN served by uvicorn on loopback with a throwaway SQLite store,
one per key. ``fuzz_gateway.py [EXAMPLES] [DIR]``: examples per operation (25), and a
directory for the full reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from gateway_support import (  # noqa: E402
    add_admin_key,
    add_tenant,
    build_gateway,
    make_settings,
    serve_in_thread,
)
from tabpfn_gateway import migrate  # noqa: E402
from tabpfn_gateway.store import open_store  # noqa: E402
from tabpfn_gateway.testing import FakeTabPFN  # noqa: E402
from tabpfn_gateway_server import create_app  # noqa: E402

TOKEN = "tok-fuzz-0001"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


def fuzz(
    url: str,
    key: str,
    max_examples: int,
    label: str,
    report_dir: str | None = None,
    selection: tuple[str, ...] = (),
) -> dict[str, int]:
    """One schemathesis run; the counts from its summary (the full report written to
    ``report_dir``, when given)."""
    command = [
        SCHEMATHESIS,
        "run",
        f"{url}/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        "not_a_server_error,status_code_conformance,response_schema_conformance,"
        "content_type_conformance,response_headers_conformance",
        "--max-examples",
        str(max_examples),
        "--seed",
        "11",
        "--continue-on-failure",
        "--request-timeout",
        "30",
        "--no-color",
        *selection,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout[-6000:])
    if report_dir is not None:
        # The whole report (every failure with its curl line), beyond the summary above.
        report = Path(report_dir) / f"fuzz-{label}.txt"
        report.write_text(done.stdout, encoding="utf-8")
        print(f"full report: {report}")
    return summary_counts(done.stdout)


def summary_counts(output: str) -> dict[str, int]:
    """Counts from schemathesis' own summary: cases generated, and unique failures by kind
    (``ST1xx`` codes: 5xx answers are "Server error", the rest contradict the schema)."""
    counts = {"cases": 0, "server_errors": 0, "schema_violations": 0, "failures": 0}
    generated = re.search(r"(\d+) generated", output)
    if generated:
        counts["cases"] = int(generated.group(1))
    for name, number in re.findall(r"❌\s+ST\d+\s+([^:\n]+):\s*(\d+)", output):
        counts["failures"] += int(number)
        if "server error" in name.lower():
            counts["server_errors"] += int(number)
        else:
            counts["schema_violations"] += int(number)
    return counts


# Admin calls that can end the admin key itself (the stateful phase finds its id in the key
# list): they run in a pass of their own, so the rest is not answered 401 from then on.
KEY_ENDING = r"^/api/v1/admin/keys/\{key_id\}/(revoke|disable|rotate)$"
PASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("admin", ("--exclude-path-regex", KEY_ENDING)),
    "admin-key-ends": ("admin", ("--include-path-regex", KEY_ENDING)),
    "inference": ("inference", ()),
}


def fuzz_pass(label: str, max_examples: int, report_dir: str | None) -> dict[str, int]:
    """One pass against a gateway of its own (an admin run revokes and rotates keys, the
    inference key's among them: a shared gateway would leave the next pass only 401s)."""
    role, selection = PASSES[label]
    with tempfile.TemporaryDirectory(prefix="tpg-fuzz-") as tmp:
        tmp_path = Path(tmp)
        settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/gateway.db")
        migrate.upgrade(settings)
        fake = FakeTabPFN(tokens=[TOKEN])
        gateway = build_gateway(settings, fake.app, store=open_store(settings))
        tenant = add_tenant(gateway, "fuzz-team", TOKEN)
        admin_key = add_admin_key(gateway, "fuzz-ops")
        key = admin_key if role == "admin" else tenant.key
        app = create_app(settings, gateway=gateway)
        try:
            with serve_in_thread(app) as url:
                counts = fuzz(url, key, max_examples, label, report_dir, selection)
                # Whether the key outlived its own pass (a revoke or rotate of itself ends it).
                probe = httpx.get(f"{url}/api/v1/usage/summary", headers=bearer(key))
                counts["key_usable_after"] = int(probe.status_code == 200)
        finally:
            gateway.close()
            gateway.store.close()
    return counts


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


def main() -> int:
    max_examples = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    report_dir = sys.argv[2] if len(sys.argv) > 2 else None
    results = {label: fuzz_pass(label, max_examples, report_dir) for label in PASSES}
    print("\nschemathesis results (distinct failures):")
    for label, counts in results.items():
        print(f"  {label:14} {counts}")
    bad = sum(c["failures"] for c in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
