"""Generate the sync protocol client (and its tests) from the async source, or check them.

The async code is the source (httpcore's approach): ``python tools/unasync.py`` rewrites each
target from its source with the substitutions below and formats it with ruff;
``python tools/unasync.py --check`` changes nothing and fails when a target is stale (what
``nox -s check_generated`` runs in CI). A source line ending in ``# unasync: remove`` has no
sync counterpart. Every substitution must be used, so the list cannot silently rot.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (async source, generated sync target), relative to the repository root.
PAIRS = [
    ("src/tabpfn_gateway/protocol/aclient.py", "src/tabpfn_gateway/protocol/client.py"),
    ("tests/test_protocol_aclient.py", "tests/test_protocol_client.py"),
]

#: Whole lines replaced as they are (prose that names the flavour).
LINES = {
    '"""The asynchronous TabPFN protocol client: one base URL, one credential, one connection pool.': (  # noqa: E501
        '"""The synchronous TabPFN protocol client: one base URL, one credential, one connection pool.'  # noqa: E501
    ),
    "The source of both clients: ``tools/unasync.py`` generates ``client.py`` from this file": (
        "Generated from ``aclient.py`` by ``tools/unasync.py``: edit that file, then run"
    ),
    "(``nox -s generate``; ``nox -s check_generated`` fails when it is stale). What really differs": (  # noqa: E501
        "``nox -s generate`` (``nox -s check_generated`` fails when this is stale). What differs"
    ),
    '"""Both protocol clients, one suite: these async tests are the source of the sync ones.': (
        '"""Both protocol clients, one suite: the sync tests, generated from the async ones.'
    ),
    "``tools/unasync.py`` generates ``test_protocol_client.py`` from this file.": (
        "Generated from ``test_protocol_aclient.py`` by ``tools/unasync.py``: do not edit."
    ),
}

#: Word-bounded regular expressions and their replacements, applied in order.
SUBS = [
    ("AsyncIterator", "Iterator"),
    ("Async([A-Z][A-Za-z0-9_]*)", r"\2"),
    ("async def", "def"),
    ("async with", "with"),
    ("async for", "for"),
    ("await ", ""),
    ("aclose", "close"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("handle_async_request", "handle_request"),
    ("asleep", "sleep"),
    ("afan_out", "fan_out"),
    ("arun_blocking", "run_blocking"),
]
COMPILED = [(re.compile(r"(^|\b)" + pattern + r"($|\b)"), repl) for pattern, repl in SUBS]
REMOVE = "# unasync: remove"


def unasync_line(line: str, used: set[int]) -> str:
    stripped = line.rstrip("\n")
    if stripped.strip() in LINES:
        indent = stripped[: len(stripped) - len(stripped.lstrip())]
        return indent + LINES[stripped.strip()] + "\n"
    for index, (regex, repl) in enumerate(COMPILED):
        new = regex.sub(repl, line)
        if new != line:
            used.add(index)
            line = new
    return line


def generate(source: Path, target: Path, used: set[int]) -> str:
    lines = [
        unasync_line(line, used)
        for line in source.read_text(encoding="utf-8").splitlines(keepends=True)
        if not line.rstrip().endswith(REMOVE)
    ]
    return _ruff("".join(lines), target)


def _ruff(code: str, target: Path) -> str:
    # Imports re-sorted (a renamed name may sort elsewhere) and lines re-wrapped (sync lines
    # are shorter), exactly as `ruff check --fix` and `ruff format` would leave the file.
    name = str(target.relative_to(ROOT))
    for command in (
        ["check", "--select", "I", "--fix", "--quiet", "--stdin-filename", name, "-"],
        ["format", "--quiet", "--stdin-filename", name, "-"],
    ):
        done = subprocess.run(  # noqa: S603 (our own interpreter, our own code)
            [sys.executable, "-m", "ruff", *command],
            input=code,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"ruff {command[0]} failed on generated {name}:\n{done.stderr}")
        code = done.stdout
    return code


def main(argv: list[str]) -> int:
    check = "--check" in argv
    used: set[int] = set()
    stale = []
    for source_name, target_name in PAIRS:
        source, target = ROOT / source_name, ROOT / target_name
        expected = generate(source, target, used)
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == expected:
            continue
        if check:
            stale.append(target_name)
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                fromfile=f"{target_name} (checked in)",
                tofile=f"{target_name} (generated from {source_name})",
            )
            sys.stdout.writelines(list(diff)[:60])
        else:
            target.write_text(expected, encoding="utf-8")
            print(f"{source_name} -> {target_name}")
    unused = [SUBS[i] for i in range(len(SUBS)) if i not in used]
    if unused:
        print(f"These substitutions were not used (remove them): {unused}")
        return 1
    if stale:
        print(f"Stale generated files: {', '.join(stale)}. Run: nox -s generate")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
