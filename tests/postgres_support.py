"""PostgreSQL for the tests: which server they use, and throwaway clusters started on demand.

The PostgreSQL tests need an admin URL (they create and drop their own databases). In order:
``TABPFN_GATEWAY_TEST_DATABASE_URL`` when set; else :data:`DEFAULT_ADMIN_URL` when it answers;
else a throwaway cluster of our own (``initdb`` + ``pg_ctl``), removed when the session ends;
else the session stops with one line that says what to do.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

PG_ENV = "TABPFN_GATEWAY_TEST_DATABASE_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
NO_POSTGRES_MESSAGE = (
    "The PostgreSQL tests found no server: start PostgreSQL at 127.0.0.1:5432 (user postgres, "
    f"trust auth), install its server tools (initdb, pg_ctl), or set {PG_ENV} to an admin URL"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_tool(name: str) -> str | None:
    """A PostgreSQL server tool: on PATH, else Debian's versioned bin dir (newest)."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def answers(url: str) -> bool:
    """Whether a PostgreSQL server accepts a connection at ``url`` (a few seconds at most)."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(conninfo, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


class ThrowawayUnavailable(RuntimeError):
    """No throwaway cluster can be made here (no server tools, or root without runuser)."""


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own (initdb + pg_ctl under a temp dir, its own port), to
    stop and start at will: the shared server is never touched. Runs the tools as the
    ``postgres`` user when we are root (initdb refuses root).

    Raises :class:`ThrowawayUnavailable` when the tools are missing.
    """

    def __init__(self, find_tool: Callable[[str], str | None] = pg_tool) -> None:
        initdb, pg_ctl = find_tool("initdb"), find_tool("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise ThrowawayUnavailable("initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin)")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self._prefix: list[str] = []
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if as_root:
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser is None:
                raise ThrowawayUnavailable("running as root without runuser: initdb cannot run")
            self._prefix = [runuser, "-u", "postgres", "--"]
        # Not under pytest's tmp_path: its parents are 0700 root, closed to the postgres user.
        self.base = Path(tempfile.mkdtemp(prefix="tpg-throwaway-pg-"))
        if as_root:
            shutil.chown(self.base, "postgres")
        self.data = self.base / "data"
        self.port = _free_port()

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the cluster if it runs and delete its directory."""
        if self.is_running():
            with contextlib.suppress(RuntimeError):
                self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def resolve_admin_url(
    environ: dict[str, str] | os._Environ[str],
    *,
    default_url: str = DEFAULT_ADMIN_URL,
    find_tool: Callable[[str], str | None] = pg_tool,
) -> tuple[str, ThrowawayPostgres | None]:
    """The admin URL the PostgreSQL tests use, and the throwaway cluster behind it if any.

    Raises :class:`ThrowawayUnavailable` with :data:`NO_POSTGRES_MESSAGE` when there is none.
    """
    explicit = environ.get(PG_ENV)
    if explicit:
        return explicit, None
    if answers(default_url):
        return default_url, None
    try:
        cluster = ThrowawayPostgres(find_tool)
    except ThrowawayUnavailable as exc:
        raise ThrowawayUnavailable(f"{NO_POSTGRES_MESSAGE} ({exc}).") from None
    try:
        cluster.init()
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        cluster.remove()
        raise ThrowawayUnavailable(
            f"{NO_POSTGRES_MESSAGE} (a throwaway cluster did not start: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__})."
        ) from None
    return cluster.url, cluster
