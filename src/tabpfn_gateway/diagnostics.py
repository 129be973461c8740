"""Health checks of a deployment (what ``tabpfn-gateway doctor`` runs): each says ok, warn,
fail or skip, what it found, and how to fix it. No check prints or returns a secret."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import SecretStr

from tabpfn_gateway.errors import GatewayError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from tabpfn_gateway.config import Settings

__all__ = ["Check", "Doctor", "Status", "worst"]

Status = Literal["ok", "warn", "fail", "skip"]

# Clock skew against the database that starts to matter: key expiry, rate windows and budget
# periods are decided with this process's clock and stored with the database's.
SKEW_WARN_SECONDS = 2.0
SKEW_FAIL_SECONDS = 30.0
# Stored credentials tried with the configured secrets (enough to catch a wrong secret).
CREDENTIALS_SAMPLED = 20
# Self-hosted containers asked for a tiny prediction (each one a request: keep it bounded).
HOSTED_CHECKED = 20


@dataclass(frozen=True)
class Check:
    """The outcome of one check. ``fix`` says what to do when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Doctor:
    """Runs every check against ``settings`` (or the environment's, read by the first check).

    ``token`` is a TabPFN token to verify against the upstream. ``upstream_transport`` and
    ``clock`` (seconds since the epoch, this machine's idea of now) are for tests.
    """

    settings: Settings | None = None
    token: SecretStr | None = None
    upstream_transport: httpx.BaseTransport | None = None
    timeout_seconds: float = 5.0
    clock: Callable[[], float] = time.time
    _engine: Engine | None = field(default=None, init=False, repr=False)
    _database_ok: bool = field(default=False, init=False)
    _schema_ok: bool = field(default=False, init=False)

    def run(self) -> list[Check]:
        """Every check, in order; checks that need a failed one's result are skipped."""
        results = [self.check_settings()]
        if self.settings is None:
            return results + [
                Check(name, "skip", "settings are invalid") for name in _AFTER_SETTINGS
            ]
        try:
            for check in (
                self.check_database,
                self.check_schema,
                self.check_secret,
                self.check_pepper,
                self.check_fingerprint,
                self.check_clock,
                self.check_files,
                self.check_redis,
                self.check_upstream,
                self.check_credential_urls,
                self.check_token,
                self.check_hosted,
            ):
                results.append(check())
        finally:
            if self._engine is not None:
                self._engine.dispose()
        return results

    # -- the checks --------------------------------------------------------------------------

    def check_settings(self) -> Check:
        from tabpfn_gateway.config import get_settings

        if self.settings is None:
            try:
                self.settings = get_settings()
            except GatewayError as exc:
                return Check(
                    "settings",
                    "fail",
                    str(exc),
                    "Correct the variable named above (docs/configuration.md lists them all).",
                )
        return Check("settings", "ok", f"valid (data dir {self.settings.data_dir})")

    def check_database(self) -> Check:
        from sqlalchemy import text

        from tabpfn_gateway.store.sql import describe_url

        settings = self._settings
        where = describe_url(settings.database_url)
        if settings.database_url.startswith("memory://"):
            return Check(
                "database",
                "warn",
                "memory:// store: nothing survives a restart",
                "Use SQLite or PostgreSQL (TABPFN_GATEWAY_DATABASE_URL) to keep data.",
            )
        try:
            started = time.perf_counter()
            with self._connect() as connection:
                connection.execute(text("SELECT 1"))
            elapsed_ms = (time.perf_counter() - started) * 1000
        except GatewayError as exc:
            return Check(
                "database",
                "fail",
                f"{where}: {exc.message}",
                "Check TABPFN_GATEWAY_DATABASE_URL (host, port, name, user) and that the "
                "database server is running and reachable from here.",
            )
        self._database_ok = True
        return Check("database", "ok", f"{where} answered in {elapsed_ms:.0f} ms")

    def check_schema(self) -> Check:
        from tabpfn_gateway import migrate

        if not self._database_ok:
            return Check("schema", "skip", "the database cannot be reached")
        try:
            current = migrate.current_revision(self._settings)
            head = migrate.head_revision()
        except GatewayError as exc:
            return Check("schema", "fail", exc.message, "Run `tabpfn-gateway db upgrade`.")
        if current == head:
            self._schema_ok = True
            return Check("schema", "ok", f"at revision {head} (the newest)")
        return Check(
            "schema",
            "fail",
            f"at revision {current or '(empty)'}, this version needs {head}",
            "Run `tabpfn-gateway db upgrade` once (or the compose `migrate` service); "
            "servers started with TABPFN_GATEWAY_MIGRATE_ON_START=true do it themselves.",
        )

    def check_secret(self) -> Check:
        from tabpfn_gateway.store import open_store
        from tabpfn_gateway.vault import SECRET_KEY_FILE, TokenVault, configured_secrets

        settings = self._settings
        try:
            secrets = configured_secrets(settings)
        except GatewayError as exc:
            return Check("secret", "fail", exc.message, "Set TABPFN_GATEWAY_SECRET_KEY.")
        if not secrets:
            if settings.is_sqlite:
                return Check(
                    "secret",
                    "warn",
                    "no secret set; `serve` will generate one in "
                    f"{Path(settings.data_dir) / SECRET_KEY_FILE}",
                    "Fine for one machine; for anything shared set TABPFN_GATEWAY_SECRET_KEY "
                    "(and back it up with the database).",
                )
            return Check(
                "secret",
                "fail",
                "no TABPFN_GATEWAY_SECRET_KEY on a shared database",
                "Set TABPFN_GATEWAY_SECRET_KEY to the same value on every replica and CLI "
                "(make one: python -c 'import secrets; print(secrets.token_urlsafe(32))').",
            )
        if not self._schema_ok:
            return Check(
                "secret",
                "ok",
                f"{len(secrets)} secret(s) configured; rows not checked (schema not current)",
            )
        try:
            vault = TokenVault(secrets)
        except GatewayError as exc:
            return Check("secret", "fail", exc.message, "Set a longer TABPFN_GATEWAY_SECRET_KEY.")
        store = open_store(settings)
        tried = undecryptable = 0
        try:
            for credential in store.iter_credentials():
                if tried >= CREDENTIALS_SAMPLED:
                    break
                tried += 1
                try:
                    vault.decrypt(credential.encrypted_token, credential_id=credential.id)
                except GatewayError:
                    undecryptable += 1
        except GatewayError as exc:
            return Check("secret", "fail", exc.message, "Check the database (see above).")
        finally:
            store.close()
        if undecryptable:
            return Check(
                "secret",
                "fail",
                f"{undecryptable} of {tried} stored TabPFN tokens cannot be decrypted with the "
                "configured secrets",
                "Set TABPFN_GATEWAY_SECRET_KEY to the secret the database was written with, or "
                "add that one to TABPFN_GATEWAY_PREVIOUS_SECRET_KEYS and run "
                "`tabpfn-gateway secrets rotate`.",
            )
        detail = f"{len(secrets)} secret(s) configured"
        detail += (
            f"; they decrypt the {tried} stored token(s) tried"
            if tried
            else "; no tokens stored yet"
        )
        return Check("secret", "ok", detail)

    def check_pepper(self) -> Check:
        settings = self._settings
        if settings.key_pepper is not None:
            return Check("pepper", "ok", "TABPFN_GATEWAY_KEY_PEPPER is set")
        if settings.is_sqlite or settings.database_url.startswith("memory://"):
            return Check("pepper", "ok", "derived from the secret and kept in the data dir")
        return Check(
            "pepper",
            "warn",
            "no TABPFN_GATEWAY_KEY_PEPPER on a shared database: each replica derives its own "
            "from the secret and keeps it in its data dir",
            "Set TABPFN_GATEWAY_KEY_PEPPER to the same long random value on every replica "
            "(docs/keys.md#hashing-and-the-pepper).",
        )

    def check_fingerprint(self) -> Check:
        """The secret against the fingerprint the database recorded on first use (versions
        that record one: ``tabpfn_gateway.secret_fingerprint``)."""
        import importlib

        from tabpfn_gateway.store import open_store
        from tabpfn_gateway.vault import configured_secrets

        try:
            recorder: Any = importlib.import_module("tabpfn_gateway.secret_fingerprint")
        except ImportError:
            return Check("fingerprint", "skip", "this version records no secret fingerprint")
        if not self._schema_ok:
            return Check("fingerprint", "skip", "the schema is not current")
        settings = self._settings
        try:
            mine = {recorder.secret_fingerprint(s) for s in configured_secrets(settings)}
        except GatewayError as exc:
            return Check("fingerprint", "fail", exc.message, "Set TABPFN_GATEWAY_SECRET_KEY.")
        store = open_store(settings)
        try:
            recorded = store.get_state(recorder.SECRET_STATE)  # read only: doctor never claims
        except GatewayError as exc:
            return Check("fingerprint", "fail", exc.message, "Check the database (see above).")
        finally:
            store.close()
        if recorded is None:
            return Check("fingerprint", "ok", "none recorded yet (the first server start does)")
        if recorded in mine:
            return Check(
                "fingerprint", "ok", "the configured secret is the one the database was set up with"
            )
        return Check(
            "fingerprint",
            "fail",
            "the configured secrets are not the one this database was set up with",
            "Use the database's TABPFN_GATEWAY_SECRET_KEY on every replica and CLI (a process "
            "with another one refuses to write).",
        )

    def check_clock(self) -> Check:
        from sqlalchemy import text

        settings = self._settings
        if not self._database_ok:
            return Check("clock", "skip", "the database cannot be reached")
        if settings.is_sqlite:
            return Check("clock", "ok", "embedded SQLite: the database uses this machine's clock")
        try:
            with self._connect() as connection:
                before = self.clock()
                database_now = connection.execute(text("SELECT CURRENT_TIMESTAMP")).scalar_one()
                after = self.clock()
        except GatewayError as exc:
            return Check("clock", "fail", exc.message, "Check the database (see above).")
        if database_now.tzinfo is None:
            database_now = database_now.replace(tzinfo=UTC)
        # The database read its clock somewhere between before and after.
        midpoint = datetime.fromtimestamp((before + after) / 2, tz=UTC)
        skew = (database_now - midpoint).total_seconds()
        uncertainty = (after - before) / 2
        effective = max(0.0, abs(skew) - uncertainty)
        detail = f"{skew:+.3f} s against the database (±{uncertainty:.3f} s)"
        if effective > SKEW_FAIL_SECONDS:
            status: Status = "fail"
        elif effective > SKEW_WARN_SECONDS:
            status = "warn"
        else:
            return Check("clock", "ok", detail)
        return Check(
            "clock",
            status,
            detail,
            "Synchronise this machine's and the database server's clocks (NTP: chrony or "
            "systemd-timesyncd); key expiry, rate windows and budget periods depend on them.",
        )

    def check_files(self) -> Check:
        from sqlalchemy.engine import make_url

        from tabpfn_gateway.keys.hashing import PEPPER_FILE
        from tabpfn_gateway.store.sql import normalize_database_url, sqlite_path
        from tabpfn_gateway.vault import SECRET_KEY_FILE

        settings = self._settings
        data_dir = Path(settings.data_dir)
        failures: list[str] = []
        warnings: list[str] = []
        fixes: list[str] = []
        checked: list[str] = []
        for secret_file in (data_dir / SECRET_KEY_FILE, data_dir / PEPPER_FILE):
            problem = _private_file_problem(secret_file)
            if secret_file.exists():
                checked.append(secret_file.name)
            if problem:
                failures.append(problem)
                fixes.append(f"chmod 600 {secret_file}")
        if data_dir.is_dir() and data_dir.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            failures.append(f"{data_dir} is writable by other users")
            fixes.append(f"chmod 700 {data_dir}")
        database_file = None
        if settings.is_sqlite:
            database_file = sqlite_path(make_url(normalize_database_url(settings.database_url)))
        if database_file is not None and database_file.exists():
            checked.append(database_file.name)
            # Readable by anyone only matters when its directory lets them reach it.
            reachable = database_file.parent.stat().st_mode & stat.S_IXOTH
            if reachable and database_file.stat().st_mode & stat.S_IROTH:
                warnings.append(
                    f"{database_file} (key hashes, encrypted tokens) is readable by other users"
                )
                fixes.append(f"chmod 700 {database_file.parent}")
        if failures or warnings:
            status: Status = "fail" if failures else "warn"
            return Check("files", status, "; ".join(failures + warnings), "; ".join(fixes))
        if not checked:
            return Check("files", "ok", f"no generated secret or database file in {data_dir}")
        return Check("files", "ok", f"{', '.join(checked)} in {data_dir}: private to this user")

    def check_redis(self) -> Check:
        settings = self._settings
        if not settings.redis_url:
            return Check("redis", "skip", "not configured (TABPFN_GATEWAY_REDIS_URL)")
        try:
            import redis
        except ImportError:
            return Check(
                "redis",
                "fail",
                "the redis package is missing",
                "pip install 'tabpfn-gateway[server]'",
            )
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=self.timeout_seconds,
            socket_timeout=self.timeout_seconds,
        )
        try:
            started = time.perf_counter()
            client.ping()
            elapsed_ms = (time.perf_counter() - started) * 1000
        except redis.RedisError as exc:
            return Check(
                "redis",
                "fail",
                f"{_redis_where(settings.redis_url)}: {type(exc).__name__}",
                "Check TABPFN_GATEWAY_REDIS_URL and that Redis is running and reachable; "
                "or unset it to keep limits and invalidation in the database.",
            )
        finally:
            client.close()
        return Check(
            "redis",
            "ok",
            f"{_redis_where(settings.redis_url)} answered PING in {elapsed_ms:.0f} ms",
        )

    def check_upstream(self) -> Check:
        url = self._settings.upstream_url
        try:
            with httpx.Client(
                transport=self.upstream_transport, timeout=self.timeout_seconds
            ) as client:
                response = client.get(url.rstrip("/") + "/")
        except httpx.HTTPError as exc:
            return Check(
                "upstream",
                "fail",
                f"{url} cannot be reached ({type(exc).__name__})",
                "Check TABPFN_GATEWAY_UPSTREAM_URL, DNS, and any outbound proxy or firewall "
                "between this machine and the upstream.",
            )
        return Check("upstream", "ok", f"{url} answered HTTP {response.status_code}")

    def check_credential_urls(self) -> Check:
        """Each TabPFN cloud URL a stored credential has of its own (``credentials add
        --upstream-url``) answers, as ``check_upstream`` asks the configured one."""
        from tabpfn_gateway.store import open_store

        name = "credentials"
        if not (self._database_ok and self._schema_ok):
            return Check(name, "skip", "the database or its schema is not usable")
        try:
            store = open_store(self._settings)
            try:
                credentials = store.list_credentials(limit=1000).items
            finally:
                store.close()
        except GatewayError as exc:
            return Check(name, "fail", f"cannot list credentials: {exc.message}", None)
        # Each URL once, in the order first stored; bounded like the hosted containers.
        urls = list(
            dict.fromkeys(
                c.endpoint_url for c in credentials if c.kind != "hosted" and c.endpoint_url
            )
        )[:HOSTED_CHECKED]
        if not urls:
            return Check(name, "skip", "no credential has a cloud URL of its own")
        problems: list[str] = []
        with httpx.Client(
            transport=self.upstream_transport, timeout=self.timeout_seconds
        ) as client:
            for url in urls:
                try:
                    client.get(url.rstrip("/") + "/")
                except httpx.HTTPError as exc:
                    problems.append(f"{url} cannot be reached ({type(exc).__name__})")
        if problems:
            return Check(
                name,
                "fail",
                f"{len(problems)} of {len(urls)} URL(s) failed: " + "; ".join(problems),
                "Check those URLs, DNS and any outbound proxy or firewall; a credential's own "
                "URL is set with credentials add --upstream-url.",
            )
        return Check(name, "ok", f"{len(urls)} credential URL(s) answered")

    def check_token(self) -> Check:
        from tabpfn_gateway.protocol.verify import TokenStatus, verify_tabpfn_token

        if self.token is None:
            return Check("token", "skip", "no token given (--check-token)")
        url = self._settings.upstream_url
        try:
            status = verify_tabpfn_token(
                self.token,
                base_url=url,
                transport=self.upstream_transport,
                timeout=self.timeout_seconds,
            )
        except GatewayError as exc:
            return Check(
                "token",
                "fail",
                f"cannot verify now: {exc.message}",
                "Check the upstream (see above) and try again.",
            )
        if status is TokenStatus.VALID:
            return Check("token", "ok", f"{url} accepts the token")
        if status is TokenStatus.VALID_LIMIT_REACHED:
            return Check(
                "token",
                "warn",
                f"{url} accepts the token, but its usage limit is reached",
                "Wait for the limit to reset or raise it with the provider.",
            )
        return Check(
            "token",
            "fail",
            f"{url} rejects the token",
            "Use a valid TabPFN token (the provider's account page issues them).",
        )

    def check_hosted(self) -> Check:
        """Each stored self-hosted container answers one tiny prediction with its token."""
        from tabpfn_gateway.hosted import open_secrets, verify_hosted_endpoint
        from tabpfn_gateway.hosted._endpoint import HostedEndpoint
        from tabpfn_gateway.protocol.verify import TokenStatus
        from tabpfn_gateway.store import open_store
        from tabpfn_gateway.vault import TokenVault

        if not (self._database_ok and self._schema_ok):
            return Check("hosted", "skip", "the database or its schema is not usable")
        settings = self._settings
        try:
            store = open_store(settings)
            try:
                hosted = [
                    c
                    for c in store.list_credentials(limit=1000).items
                    if c.kind == "hosted" and c.endpoint_url
                ][:HOSTED_CHECKED]
            finally:
                store.close()
        except GatewayError as exc:
            return Check("hosted", "fail", f"cannot list credentials: {exc.message}", None)
        if not hosted:
            return Check("hosted", "skip", "no self-hosted container credentials")
        try:
            vault = TokenVault.from_settings(settings)
        except GatewayError:
            return Check("hosted", "skip", "no secret to open the containers' tokens with")
        problems: list[str] = []
        for credential in hosted:
            where = f"{credential.label!r} ({credential.endpoint_url})"
            try:
                plain = vault.decrypt(credential.encrypted_token, credential_id=credential.id)
                token, headers = open_secrets(plain, credential_id=credential.id)
                endpoint = HostedEndpoint(
                    credential.endpoint_url or "",
                    token=token,
                    headers=headers,
                    timeout=self.timeout_seconds,
                    connect_timeout=self.timeout_seconds,
                )
                status = verify_hosted_endpoint(endpoint, timeout=self.timeout_seconds)
            except GatewayError as exc:
                problems.append(f"{where}: {exc.message}")
                continue
            if status is not TokenStatus.VALID:
                problems.append(f"{where} refuses its stored token or headers (401/403)")
        if problems:
            return Check(
                "hosted",
                "fail",
                f"{len(problems)} of {len(hosted)} container(s) failed: " + "; ".join(problems),
                "Check the container is running and reachable from here, and that its stored "
                "token and headers are current (tabpfn-gateway credentials add --kind hosted "
                "stores new ones).",
            )
        return Check("hosted", "ok", f"{len(hosted)} container(s) answered a tiny prediction")

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _settings(self) -> Settings:
        assert self.settings is not None
        return self.settings

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        from sqlalchemy import exc as sa_exc

        from tabpfn_gateway.store.sql import (
            create_engine_for_url,
            describe_url,
            map_database_error,
        )

        settings = self._settings
        try:
            if self._engine is None:
                self._engine = create_engine_for_url(settings.database_url, settings)
            with self._engine.connect() as connection:
                yield connection
        except sa_exc.SQLAlchemyError as exc:
            raise map_database_error(exc, "doctor", describe_url(settings.database_url)) from None


_AFTER_SETTINGS = (
    "database",
    "schema",
    "secret",
    "pepper",
    "fingerprint",
    "clock",
    "files",
    "redis",
    "upstream",
    "credentials",
    "token",
    "hosted",
)


def _private_file_problem(path: Path) -> str | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} is readable or writable by others (mode {stat.filemode(info.st_mode)})"
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        return f"{path} belongs to another user (uid {info.st_uid})"
    return None


def _redis_where(url: str) -> str:
    # Never the password: scheme, host and port only.
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or 6379}"


def worst(checks: list[Check]) -> Status:
    """The worst status among ``checks`` (fail > warn > ok > skip)."""
    order: dict[Status, int] = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}
    return max((c.status for c in checks), key=order.__getitem__, default="ok")
