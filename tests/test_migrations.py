"""Alembic migrations: the schema they build is exactly the models', both ways, from a wheel too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tabpfn_gateway import migrate
from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import InvalidRequest, StoreUnavailable
from tabpfn_gateway.store.schema import metadata
from tabpfn_gateway.store.sql import create_engine_for_url

REPO = Path(__file__).resolve().parents[1]
TABLES = {table.name for table in metadata.sorted_tables}


def schema_differences(settings: Settings) -> list[object]:
    engine = create_engine_for_url(settings.database_url, settings)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def table_names(settings: Settings) -> set[str]:
    engine = create_engine_for_url(settings.database_url, settings)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def check_round_trip(settings: Settings) -> None:
    head = migrate.head_revision()
    assert migrate.current_revision(settings) is None
    assert not migrate.is_current(settings)

    migrate.upgrade(settings)
    assert migrate.current_revision(settings) == head
    assert migrate.is_current(settings)
    assert table_names(settings) == TABLES
    assert schema_differences(settings) == []

    migrate.upgrade(settings)  # a second upgrade is a no-op
    assert migrate.current_revision(settings) == head

    migrate.downgrade(settings, "base")
    assert migrate.current_revision(settings) is None
    assert table_names(settings) == set()

    migrate.upgrade(settings, "head")
    assert schema_differences(settings) == []


def test_sqlite_upgrade_builds_exactly_the_models_and_downgrades(sqlite_url: str) -> None:
    check_round_trip(Settings(database_url=sqlite_url))


def test_postgres_upgrade_builds_exactly_the_models_and_downgrades(pg_url: str) -> None:
    check_round_trip(Settings(database_url=pg_url))


def test_one_linear_history_with_a_single_head() -> None:
    scripts = ScriptDirectory(str(migrate.scripts_dir()))
    assert scripts.get_heads() == [migrate.head_revision()]
    assert [r.revision for r in scripts.walk_revisions()][-1] == scripts.get_base()


def test_scripts_found_in_the_source_tree() -> None:
    assert migrate.scripts_dir() == REPO / "migrations"


def test_current_revision_does_not_create_the_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "not" / "yet" / "gateway.db"
    settings = Settings(database_url=f"sqlite:///{database}")
    assert migrate.current_revision(settings) is None
    assert not database.exists()
    assert not database.parent.exists()


def test_current_revision_of_an_empty_postgres_database_is_none(pg_url: str) -> None:
    assert migrate.current_revision(Settings(database_url=pg_url)) is None


def test_unknown_revision_is_invalid_request(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    with pytest.raises(InvalidRequest, match="nonsense"):
        migrate.upgrade(settings, "nonsense")
    assert migrate.current_revision(settings) is None


def test_memory_store_has_nothing_to_migrate() -> None:
    settings = Settings(database_url="memory://")
    assert migrate.current_revision(settings) is None
    with pytest.raises(InvalidRequest):
        migrate.upgrade(settings)


def test_unreachable_database_is_store_unavailable() -> None:
    settings = Settings(database_url="postgresql://u:hunter22@127.0.0.1:1/gw")
    with pytest.raises(StoreUnavailable) as raised:
        migrate.upgrade(settings)
    assert "hunter22" not in str(raised.value)
    with pytest.raises(StoreUnavailable):
        migrate.current_revision(settings)


@pytest.mark.slow
def test_db_upgrade_runs_from_a_built_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("tabpfn_gateway-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert (site / "tabpfn_gateway" / "_migrations" / "env.py").is_file()

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    database = tmp_path / "data" / "gateway.db"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TABPFN_GATEWAY_") and key != "PYTHONPATH"
    }
    env.update(PYTHONPATH=str(site), TABPFN_GATEWAY_DATABASE_URL=f"sqlite:///{database}")
    script = (
        "import sys, tabpfn_gateway, tabpfn_gateway.migrate as m\n"
        "from tabpfn_gateway.cli import main\n"
        "print(tabpfn_gateway.__file__)\n"
        "print(m.scripts_dir())\n"
        "code = main(['db', 'upgrade'])\n"
        "print(m.current_revision(), m.head_revision())\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    package_file, scripts, _upgraded, revisions = run.stdout.strip().splitlines()
    assert Path(package_file).is_relative_to(site)
    assert Path(scripts) == site / "tabpfn_gateway" / "_migrations"
    current, head = revisions.split()
    assert current == head == migrate.head_revision()
    assert database.is_file()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_failing_migration_leaves_the_schema_as_it_was(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/gw.db"
    else:
        url = request.getfixturevalue("pg_url")
    settings = Settings(database_url=url)
    migrate.upgrade(settings)
    head = migrate.head_revision()

    scripts = tmp_path / "scripts"
    shutil.copytree(migrate.scripts_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_broken.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        "revision = '9999'\n"
        f"down_revision = {head!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n"
        "def upgrade():\n"
        "    op.create_table('half_done', sa.Column('id', sa.Integer, primary_key=True))\n"
        "    op.add_column('principals', sa.Column('extra', sa.Integer))\n"
        "    raise RuntimeError('this migration fails half way')\n"
        "def downgrade():\n"
        "    pass\n"
    )
    monkeypatch.setattr(migrate, "scripts_dir", lambda: scripts)
    with pytest.raises(RuntimeError, match="half way"):
        migrate.upgrade(settings)
    monkeypatch.undo()

    assert migrate.current_revision(settings) == head
    assert table_names(settings) == TABLES
    assert schema_differences(settings) == []
