"""Checks of a built wheel (and, with --installed, of the package installed from it) that the
generic tools do not make: what must ship, what must not, and one version everywhere."""

from __future__ import annotations

import argparse
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tabpfn_gateway", "tabpfn_gateway_server")


def project_version() -> str:
    """The version, from its one place: pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def shipped_source_files() -> set[str]:
    """Every file under src/ that belongs in the wheel (no caches)."""
    files = set()
    for package in PACKAGES:
        for path in (ROOT / "src" / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(path.relative_to(ROOT / "src").as_posix())
    return files


def check_wheel(wheel: Path) -> list[str]:
    """Problems with the wheel's contents (empty when it is complete and clean)."""
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
    version = project_version()
    if f"\nVersion: {version}\n" not in metadata:
        problems.append(f"wheel metadata does not carry version {version}")
    if f"-{version}-" not in wheel.name:
        problems.append(f"wheel file name {wheel.name} does not carry version {version}")
    missing = sorted(shipped_source_files() - names)
    problems += [f"missing from the wheel: {name}" for name in missing]
    for required in ("tabpfn_gateway/py.typed", "tabpfn_gateway/_migrations/alembic.ini"):
        if required not in names:
            problems.append(f"missing from the wheel: {required}")
    migrations = [
        n
        for n in names
        if n.startswith("tabpfn_gateway/_migrations/versions/") and n.endswith(".py")
    ]
    shipped = {Path(n).name for n in migrations}
    wanted = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    problems += [f"migration missing from the wheel: {n}" for n in sorted(wanted - shipped)]
    if not any("/licenses/LICENSE" in n for n in names):
        problems.append("the licence file is not in the wheel's .dist-info/licenses/")
    top_level = {n.split("/", 1)[0] for n in names}
    unexpected = sorted(t for t in top_level if t not in PACKAGES and not t.endswith(".dist-info"))
    problems += [f"unexpected top-level entry in the wheel: {t}" for t in unexpected]
    problems += [f"test data in the wheel: {n}" for n in sorted(names) if "/tests/" in n]
    return problems


def check_installed() -> list[str]:
    """Problems with the package as installed from the wheel."""
    from importlib.metadata import version

    import tabpfn_gateway
    from tabpfn_gateway import migrate

    problems = []
    installed = version("tabpfn-gateway")
    if tabpfn_gateway.__version__ != installed:
        problems.append(f"__version__ {tabpfn_gateway.__version__} != metadata {installed}")
    if Path(tabpfn_gateway.__file__).resolve().is_relative_to(ROOT / "src"):
        problems.append("tabpfn_gateway was imported from the source tree, not the install")
    if not list(Path(migrate.__file__).parent.joinpath("_migrations", "versions").glob("*.py")):
        problems.append("the installed package has no migrations")
    import anyio
    import httpx
    from pydantic import SecretStr

    from tabpfn_gateway.config import Settings
    from tabpfn_gateway_server.app import create_app

    settings = Settings(
        database_url="memory://",
        secret_key=SecretStr("release-check-secret-0000000000000000"),
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings.model_copy(update={"console_enabled": True}), migrate=False)

    async def fetch_all() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            # The admin console's templates and static files ship in the wheel too.
            for path in (
                "/healthz",
                "/openapi.json",
                "/docs",
                "/console/sign-in",
                "/console/static/console.css",
                "/console/static/console.js",
            ):
                status = (await client.get(path)).status_code
                if status != 200:
                    problems.append(f"GET {path} answered {status} from the installed server")

    anyio.run(fetch_all)
    return problems


def main() -> int:
    """Run the checks; print each problem and exit non-zero when there is one."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("wheel", nargs="?", type=Path)
    parser.add_argument("--installed", action="store_true")
    args = parser.parse_args()
    problems = check_installed() if args.installed else check_wheel(args.wheel)
    for problem in problems:
        print(f"release check: {problem}", file=sys.stderr)
    if not problems:
        print("release check: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
