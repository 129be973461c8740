"""Admin: the framework-free service behind the CLI and the server's admin API.

Principals, upstream credentials (TabPFN tokens, encrypted by the vault), secret rotation,
and the KeyManager for keys. Every change writes an audit event (actor, action, target,
time), never a secret.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from tabpfn_gateway.errors import (
    CredentialNotFound,
    InvalidRequest,
    PrincipalNotFound,
    SecretKeyMissing,
    UpstreamAuthenticationFailed,
)
from tabpfn_gateway.keys.manager import KeyManager
from tabpfn_gateway.logs import register_secret
from tabpfn_gateway.store.records import (
    AuditEvent,
    Page,
    Principal,
    PrincipalKind,
    UpstreamCredential,
    new_id,
    utcnow,
)
from tabpfn_gateway.vault import TokenVault

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.hosted import HostedEndpoint
    from tabpfn_gateway.store.base import Store

__all__ = ["Admin", "HostedVerifier", "RotationReport", "TokenVerifier"]

logger = logging.getLogger(__name__)

#: Checks a TabPFN token against the upstream, e.g. ``protocol.verify_tabpfn_token``: returns
#: a status whose ``name`` is VALID, VALID_LIMIT_REACHED or INVALID (or a bool), raises
#: ``UpstreamUnavailable`` when it cannot tell.
TokenVerifier = Callable[[SecretStr], Any]
#: Checks a hosted container (``tabpfn_gateway.hosted.verify_hosted_endpoint``): the same
#: answers as a ``TokenVerifier``, given a ``HostedEndpoint``.
HostedVerifier = Callable[["HostedEndpoint"], Any]

_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_MAX_LABEL_LENGTH = 200
_VALID_STATUSES = {"VALID", "VALID_LIMIT_REACHED"}


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What ``secrets rotate`` did: rows seen, rows re-encrypted, rows already current."""

    rows: int
    reencrypted: int
    already_current: int


class Admin:
    """Administration over one store. ``vault`` may be None when no secret is configured:
    everything but credentials works then, and credential operations raise
    ``SecretKeyMissing``."""

    def __init__(self, store: Store, vault: TokenVault | None, keys: KeyManager) -> None:
        self.store = store
        self.vault = vault
        self.keys = keys
        self._owns_store = False

    def __repr__(self) -> str:
        return f"Admin(vault={self.vault!r}, keys={self.keys!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        generate_secret: bool = False,
    ) -> Admin:
        """An Admin over ``store`` (or the store the settings name, closed by ``close()``).

        ``generate_secret`` is passed to ``TokenVault.from_settings(generate=...)``.
        """
        if settings is None:
            from tabpfn_gateway.config import get_settings

            settings = get_settings()
        try:
            vault: TokenVault | None = TokenVault.from_settings(settings, generate=generate_secret)
        except SecretKeyMissing:
            vault = None
        owns_store = store is None
        if store is None:
            from tabpfn_gateway.store import open_store

            store = open_store(settings)
        try:
            keys = KeyManager.from_settings(settings, store=store)
        except BaseException:
            if owns_store:
                store.close()
            raise
        admin = cls(store, vault, keys)
        admin._owns_store = owns_store
        return admin

    def close(self) -> None:
        """Flush the key manager; close the store if this Admin opened it."""
        try:
            self.keys.close()
        finally:
            if self._owns_store:
                self.store.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- principals --------------------------------------------------------------------

    def add_principal(
        self, name: str, kind: PrincipalKind = "user", *, actor: str = "system"
    ) -> Principal:
        """Add a user or team. ``Conflict`` if the name is taken."""
        if not isinstance(name, str) or not _PRINCIPAL_NAME.fullmatch(name):
            raise InvalidRequest(
                "A principal name is 1-100 characters of letters, digits and . _ @ + -, "
                "starting with a letter or digit."
            )
        if kind not in ("user", "team"):
            raise InvalidRequest(f"A principal kind is 'user' or 'team', not {kind!r}.")
        now = utcnow()
        principal = Principal(id=new_id(), name=name, kind=kind, created_at=now)
        with self.store.atomic() as tx:
            stored = tx.add_principal(principal)
            tx.record_audit(
                _event(actor, "principal.add", "principal", stored.id, name=name, kind=kind)
            )
        logger.info("Added %s %s (%s) by %s", kind, name, stored.id, actor)
        return stored

    def get_principal(self, id_or_name: str) -> Principal:
        """The principal with this id, else with this name; ``PrincipalNotFound``."""
        found = self.store.get_principal(id_or_name) or self.store.get_principal_by_name(id_or_name)
        if found is None:
            raise PrincipalNotFound(f"No principal with id or name {id_or_name!r}.")
        return found

    def list_principals(
        self, *, kind: PrincipalKind | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[Principal]:
        """Principals (of one kind, if given), newest first, one page."""
        return self.store.list_principals(kind=kind, limit=limit, cursor=cursor)

    # -- upstream credentials ----------------------------------------------------------

    def add_credential(
        self,
        owner: str,
        token: str | SecretStr,
        label: str,
        *,
        verify: TokenVerifier | None = None,
        actor: str = "system",
    ) -> UpstreamCredential:
        """Store a TabPFN token for principal ``owner`` (id or name), encrypted.

        With ``verify``, the token is checked first: an invalid token is refused
        (``UpstreamAuthenticationFailed``) and stored nowhere; an unreachable upstream
        raises ``UpstreamUnavailable`` (retryable), also storing nothing.
        """
        vault = self._require_vault()
        raw = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidRequest("The TabPFN token is empty.")
        secret = SecretStr(raw.strip())
        register_secret(secret.get_secret_value())
        if not isinstance(label, str) or not label.strip() or len(label) > _MAX_LABEL_LENGTH:
            raise InvalidRequest(f"A credential label is 1-{_MAX_LABEL_LENGTH} characters.")
        principal = self.get_principal(owner)
        verified: str | None = None
        if verify is not None:
            status = verify(secret)
            verified = _status_name(status)
            if verified not in _VALID_STATUSES:
                raise UpstreamAuthenticationFailed(
                    "The upstream rejected this TabPFN token; nothing was stored."
                )
            if verified == "VALID_LIMIT_REACHED":
                logger.warning(
                    "The TabPFN account behind credential %r is at its usage limit", label
                )
        now = utcnow()
        credential_id = new_id()
        credential = UpstreamCredential(
            id=credential_id,
            owner_id=principal.id,
            label=label.strip(),
            encrypted_token=vault.encrypt(secret, credential_id=credential_id),
            created_at=now,
            verified_at=now if verified else None,
        )
        with self.store.atomic() as tx:
            stored = tx.add_credential(credential)
            tx.record_audit(
                _event(
                    actor,
                    "credential.add",
                    "credential",
                    credential_id,
                    owner_id=principal.id,
                    label=credential.label,
                    verification=verified.lower() if verified else "skipped",
                )
            )
        logger.info("Added credential %s for %s by %s", credential_id, principal.name, actor)
        return stored

    def add_hosted_credential(
        self,
        owner: str,
        label: str,
        *,
        endpoint_url: str,
        token: str | SecretStr | None = None,
        extra_headers: Mapping[str, str] | None = None,
        timeout_seconds: float | None = None,
        connect_timeout_seconds: float | None = None,
        verify: HostedVerifier | None = None,
        actor: str = "system",
    ) -> UpstreamCredential:
        """Store a self-hosted inference container for principal ``owner`` (id or name).

        ``endpoint_url`` is the container's ``/predict`` URL; ``token`` (optional) is sent as
        ``Authorization: Bearer``; ``extra_headers`` go with every request. The token and the
        headers are encrypted together by the vault. With ``verify`` (e.g.
        ``tabpfn_gateway.hosted.verify_hosted_endpoint``), the container is asked for one tiny
        prediction first: a refused token is ``UpstreamAuthenticationFailed``, an unreachable
        container ``UpstreamUnavailable`` (retryable); nothing is stored then.
        """
        from tabpfn_gateway.hosted import (
            HostedEndpoint,
            check_endpoint_url,
            check_extra_headers,
            check_timeout,
            seal_secrets,
        )

        vault = self._require_vault()
        url = check_endpoint_url(endpoint_url)
        headers = check_extra_headers(extra_headers)
        timeout = check_timeout(timeout_seconds, "timeout_seconds")
        connect_timeout = check_timeout(connect_timeout_seconds, "connect_timeout_seconds")
        sealed, checked_token = seal_secrets(token, headers)
        if checked_token is not None:
            register_secret(checked_token.get_secret_value())
        if not isinstance(label, str) or not label.strip() or len(label) > _MAX_LABEL_LENGTH:
            raise InvalidRequest(f"A credential label is 1-{_MAX_LABEL_LENGTH} characters.")
        principal = self.get_principal(owner)
        verified: str | None = None
        if verify is not None:
            endpoint = HostedEndpoint(
                url=url,
                token=checked_token,
                headers=headers,
                timeout=timeout or 60.0,
                connect_timeout=connect_timeout or 10.0,
            )
            verified = _status_name(verify(endpoint))
            if verified not in _VALID_STATUSES:
                raise UpstreamAuthenticationFailed(
                    "The hosted endpoint refused this token or these headers (HTTP 401/403); "
                    "nothing was stored."
                )
        now = utcnow()
        credential_id = new_id()
        credential = UpstreamCredential(
            id=credential_id,
            owner_id=principal.id,
            label=label.strip(),
            encrypted_token=vault.encrypt(sealed, credential_id=credential_id),
            created_at=now,
            verified_at=now if verified else None,
            kind="hosted",
            endpoint_url=url,
            timeout_seconds=timeout,
            connect_timeout_seconds=connect_timeout,
        )
        with self.store.atomic() as tx:
            stored = tx.add_credential(credential)
            tx.record_audit(
                _event(
                    actor,
                    "credential.add",
                    "credential",
                    credential_id,
                    owner_id=principal.id,
                    label=credential.label,
                    kind="hosted",
                    endpoint_url=url,
                    # Header names only: their values may be secrets.
                    extra_headers=sorted(headers),
                    verification=verified.lower() if verified else "skipped",
                )
            )
        logger.info("Added hosted credential %s for %s by %s", credential_id, principal.name, actor)
        return stored

    def get_credential(self, credential_id: str) -> UpstreamCredential:
        """The credential record (its token stays encrypted); ``CredentialNotFound``."""
        found = self.store.get_credential(credential_id)
        if found is None:
            raise CredentialNotFound(f"No upstream credential with id {credential_id!r}.")
        return found

    def list_credentials(
        self, *, owner: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[UpstreamCredential]:
        """Credentials (of principal ``owner``, id or name, if given), newest first."""
        owner_id = self.get_principal(owner).id if owner is not None else None
        return self.store.list_credentials(owner_id=owner_id, limit=limit, cursor=cursor)

    def remove_credential(self, credential_id: str, *, actor: str = "system") -> None:
        """Delete a credential. Keys bound to it stay, and are refused from now on."""
        credential = self.get_credential(credential_id)
        with self.store.atomic() as tx:
            if not tx.delete_credential(credential_id):
                raise CredentialNotFound(f"No upstream credential with id {credential_id!r}.")
            tx.record_audit(
                _event(
                    actor,
                    "credential.remove",
                    "credential",
                    credential_id,
                    owner_id=credential.owner_id,
                    label=credential.label,
                )
            )
        logger.info("Removed credential %s by %s", credential_id, actor)

    def upstream_token(self, credential_id: str) -> SecretStr:
        """The decrypted TabPFN token of a credential, for one upstream call; never logged."""
        vault = self._require_vault()
        credential = self.get_credential(credential_id)
        return vault.decrypt(credential.encrypted_token, credential_id=credential.id)

    def rotate_secrets(self, *, actor: str = "system") -> RotationReport:
        """Re-encrypt every credential under the current secret, in one transaction.

        Every row is decrypted (so a row no configured secret opens stops the rotation with
        ``TokenDecryptionFailed`` naming it, and nothing changes); rows made with an older
        secret are re-encrypted.
        """
        vault = self._require_vault()
        with self.store.atomic() as tx:
            rows = 0
            current = 0
            updates: dict[str, bytes] = {}
            for credential in tx.iter_credentials():
                rows += 1
                token = vault.decrypt(credential.encrypted_token, credential_id=credential.id)
                if vault.is_current(credential.encrypted_token):
                    current += 1
                else:
                    updates[credential.id] = vault.encrypt(token, credential_id=credential.id)
            reencrypted = tx.update_credential_ciphertexts(updates) if updates else 0
            report = RotationReport(rows=rows, reencrypted=reencrypted, already_current=current)
            tx.record_audit(
                _event(
                    actor,
                    "secrets.rotate",
                    "credential",
                    "*",
                    rows=rows,
                    reencrypted=reencrypted,
                    already_current=current,
                )
            )
        logger.info(
            "Secret rotation by %s: %d rows, %d re-encrypted, %d already current",
            actor,
            rows,
            reencrypted,
            current,
        )
        return report

    # -- audit -------------------------------------------------------------------------

    def list_audit(
        self,
        *,
        target_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEvent]:
        """Audit events matching every filter given, newest first, one page."""
        return self.store.list_audit(
            target_id=target_id, actor=actor, action=action, limit=limit, cursor=cursor
        )

    def _require_vault(self) -> TokenVault:
        if self.vault is None:
            raise SecretKeyMissing()
        return self.vault


def _status_name(status: Any) -> str:
    if status is True:
        return "VALID"
    if status is False or status is None:
        return "INVALID"
    return str(getattr(status, "name", status)).upper()


def _event(actor: str, action: str, target_type: str, target_id: str, **details: Any) -> AuditEvent:
    return AuditEvent(
        id=new_id(),
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        created_at=utcnow(),
        details=details,
    )
