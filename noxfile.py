"""nox sessions: plain `nox` runs what CI runs (lint, typecheck, tests on SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import sys

import nox

# Sessions run in the environment nox is started from (README: pip install -e '.[dev]'),
# so one install serves every session and CI measures the same thing a developer runs.
nox.options.default_venv_backend = "none"
nox.options.sessions = [
    "lint",
    "typecheck",
    "check_generated",
    "docs",
    "tests",
    "build",
]
nox.options.error_on_missing_interpreters = True

# The interpreter nox runs under (the project venv), whatever PATH says.
PY = sys.executable


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    paths = ["src", "tests", "benchmarks", "examples", "migrations", "tools", "noxfile.py"]
    session.run(PY, "-m", "ruff", "check", *paths)
    session.run(PY, "-m", "ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy strict on src/."""
    session.run(PY, "-m", "mypy")


@nox.session
def check_generated(session: nox.Session) -> None:
    """The sync protocol client and its tests are current with their async source."""
    session.run(PY, os.path.join("tools", "unasync.py"), "--check")


@nox.session
def generate(session: nox.Session) -> None:
    """Regenerate the sync protocol client and its tests from the async source."""
    session.run(PY, os.path.join("tools", "unasync.py"))


def _test_workers() -> str:
    """pytest-xdist workers: TABPFN_GATEWAY_TEST_WORKERS, else twice the cores (most tests
    wait on subprocesses, sockets and databases rather than compute; 4 on this 2-core machine)."""
    return os.environ.get("TABPFN_GATEWAY_TEST_WORKERS") or str(2 * (os.cpu_count() or 1))


def _pytest(session: nox.Session, *marker: str) -> None:
    # loadscope: a module's tests share one worker, so a module-scoped fixture (the clean venv
    # holding the built wheel, a served gateway) is built once, not once per worker.
    workers = ["-n", _test_workers(), "--dist", "loadscope"]
    session.run(PY, "-m", "pytest", *workers, *marker, *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite in parallel: the embedded SQLite and memory stores, and PostgreSQL (on
    TABPFN_GATEWAY_TEST_DATABASE_URL when set, an admin URL: tests create and drop their own
    databases; else postgresql://postgres@127.0.0.1:5432/postgres when it answers; else a
    throwaway cluster started with initdb/pg_ctl; see tests/postgres_support.py)."""
    _pytest(session)


@nox.session(default=False)
def tests_sqlite(session: nox.Session) -> None:
    """Only the tests that need no PostgreSQL."""
    _pytest(session, "-m", "not postgres")


@nox.session(default=False)
def tests_postgres(session: nox.Session) -> None:
    """Only the PostgreSQL tests (the database is chosen as in ``tests``)."""
    _pytest(session, "-m", "postgres")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each against its anchor in the same run, printed as ratios."""
    for script in ("keys", "protocol", "gateway", "sdk", "console", "hosted", "governance"):
        path = os.path.join("benchmarks", f"{script}.py")
        if os.path.exists(path):
            session.run(PY, path, *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, strict (a broken link, a missing reference or any warning
    fails), built offline into site/."""
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run(PY, "-m", "mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def build(session: nox.Session) -> None:
    """The sdist and wheel, checked, then installed into a clean venv that runs the demo and
    `db upgrade` from the wheel (migrations and static assets included)."""
    import glob
    import shutil
    import tempfile

    shutil.rmtree("dist", ignore_errors=True)
    session.run(PY, "-m", "build", "--outdir", "dist")
    artefacts = sorted(glob.glob("dist/*"))
    session.run(PY, "-m", "twine", "check", "--strict", *artefacts)
    wheel = next(path for path in artefacts if path.endswith(".whl"))
    session.run(PY, "-m", "check_wheel_contents", wheel)
    session.run(PY, os.path.join("tools", "check_release.py"), wheel)
    with tempfile.TemporaryDirectory(prefix="tpg-release-") as scratch:
        venv = os.path.join(scratch, "venv")
        session.run(PY, "-m", "venv", venv)
        python = os.path.join(venv, "bin", "python")
        # A current pip: the one venv bundles can backtrack for a long time on this tree.
        session.run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
        # --no-compile: byte-compiling every dependency is half of the install's time.
        session.run(python, "-m", "pip", "install", "-q", "--no-compile", f"{wheel}[server]")
        # A new user's machine: own HOME and data dir, no project variable.
        env = {key: value for key, value in os.environ.items() if not key.startswith("TABPFN_")}
        env.update(HOME=os.path.join(scratch, "home"), XDG_DATA_HOME=os.path.join(scratch, "data"))
        cli = os.path.join(venv, "bin", "tabpfn-gateway")
        isolated = {"env": env, "include_outer_env": False, "external": True}
        # db upgrade first, on the new user's empty database: every migration is applied from
        # the wheel (after the demo, which migrates too, it would only find the schema current).
        session.run(cli, "db", "upgrade", **isolated)
        session.run(cli, "demo", **isolated)
        session.run(python, os.path.join("tools", "check_release.py"), "--installed", **isolated)


@nox.session
def console_screenshots(session: nox.Session) -> None:
    """Screenshots of every admin console page at desktop (1280 px) and phone (360 px) widths,
    saved for review in screenshots/console/ (or the first argument); Debian's chromium."""
    target = os.path.abspath(session.posargs[0] if session.posargs else "screenshots/console")
    session.run(
        PY,
        "-m",
        "pytest",
        "tests/test_console_browser.py",
        "-k",
        "screenshots",
        "-q",
        env={"TABPFN_GATEWAY_CONSOLE_SCREENSHOTS": target},
    )
    session.log(f"screenshots saved in {target}")


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """schemathesis over the OpenAPI document, with an admin key and an inference key (not in
    the default sessions: slow). ``nox -s fuzz -- 100`` runs 100 examples per operation;
    ``nox -s fuzz -- 100 DIR`` also writes the full reports to DIR."""
    session.run(PY, os.path.join("tests", "security", "fuzz_gateway.py"), *session.posargs)
