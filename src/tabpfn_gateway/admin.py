"""Admin: the one management service behind the CLI and the server's admin API.

Principals, upstream credentials (TabPFN tokens, encrypted by the vault), gateway keys (by
owner name or id, by key id or display prefix), usage, audit and secret rotation. Every
change writes an audit event (actor, action, target, time), never a secret, and is announced
through the injected bus so every replica drops what it cached. The CLI and the routes only
translate arguments and answers; the rules live here.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from tabpfn_gateway.errors import (
    ConfigurationError,
    CredentialNotFound,
    InvalidRequest,
    PrincipalNotFound,
    SecretKeyMissing,
    StoreError,
    UpstreamAuthenticationFailed,
    UpstreamKindMismatch,
)
from tabpfn_gateway.gateway._invalidation import (
    InvalidationBus,
    Publisher,
    credential_changed,
    key_changed,
)
from tabpfn_gateway.keys.manager import DEFAULT_SCOPES, CreatedKey, KeyManager
from tabpfn_gateway.logs import register_secret
from tabpfn_gateway.store.base import CHANGES_COUNTER
from tabpfn_gateway.store.records import (
    ApiKey,
    AuditEvent,
    Page,
    Principal,
    PrincipalKind,
    UpstreamCredential,
    UsageEvent,
    UsageSummary,
    new_id,
    utcnow,
)
from tabpfn_gateway.vault import TokenVault

if TYPE_CHECKING:
    import httpx

    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.gateway._usage import UsageRecorder
    from tabpfn_gateway.governance import BudgetStatus, EffectivePolicy, UsageReport
    from tabpfn_gateway.governance._admin import GovernanceAdmin, PolicyTarget
    from tabpfn_gateway.hosted import HostedEndpoint
    from tabpfn_gateway.store.base import Store
    from tabpfn_gateway.store.records import Membership, Policy, PruneReport

__all__ = [
    "SETUP_PRINCIPAL_PREFIX",
    "Admin",
    "HostedVerifier",
    "RotationReport",
    "TokenVerifier",
    "UrlTokenVerifier",
    "check_setup_label",
    "key_id_of",
]

logger = logging.getLogger(__name__)

#: Checks a TabPFN token against the upstream, e.g. ``protocol.verify_tabpfn_token``: returns
#: a status whose ``name`` is VALID, VALID_LIMIT_REACHED or INVALID (or a bool), raises
#: ``UpstreamUnavailable`` when it cannot tell.
TokenVerifier = Callable[[SecretStr], Any]
#: Checks a TabPFN token against a given cloud URL (a credential's own): ``(token, base_url)``,
#: the same answers as a ``TokenVerifier``.
UrlTokenVerifier = Callable[[SecretStr, str], Any]
#: Checks a hosted container (``tabpfn_gateway.hosted.verify_hosted_endpoint``): the same
#: answers as a ``TokenVerifier``, given a ``HostedEndpoint``.
HostedVerifier = Callable[["HostedEndpoint"], Any]

_PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
#: The name prefix of principals made by self-service setup (admin names cannot hold ':').
SETUP_PRINCIPAL_PREFIX = "setup:"
_SETUP_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_MAX_LABEL_LENGTH = 200
_VALID_STATUSES = {"VALID", "VALID_LIMIT_REACHED"}


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What ``secrets rotate`` did: rows seen, rows re-encrypted, rows already current."""

    rows: int
    reencrypted: int
    already_current: int


def key_id_of(text: str) -> str:
    """The key id in what a person pastes: a key id, a display prefix (``tpg_<id>``) or even
    a whole key (whose secret is dropped here, never echoed)."""
    from tabpfn_gateway.keys.format import ADMIN_PREFIX, KEY_ID_LENGTH, PREFIX

    text = text.strip()
    for prefix in (ADMIN_PREFIX, PREFIX):
        if text.startswith(prefix):
            return text[len(prefix) : len(prefix) + KEY_ID_LENGTH]
    return text


def check_setup_label(requested: str | None) -> str | None:
    """``requested`` (a setup's ``name``, stripped) if it is 1-64 characters of letters, digits
    and . _ @ + - starting with a letter or digit; else ``InvalidRequest``. None stays None."""
    if requested is None:
        return None
    label = requested.strip() if isinstance(requested, str) else ""
    if not _SETUP_LABEL.fullmatch(label):
        raise InvalidRequest(
            "name is 1-64 characters of letters, digits and . _ @ + -, starting with a "
            "letter or digit."
        )
    return label


class Admin:
    """Administration over one store.

    ``vault`` may be None when no secret is configured: everything but credentials works
    then, and credential operations raise ``SecretKeyMissing``. ``bus`` announces changes
    (key and credential invalidations) to every replica; ``usage`` is flushed before usage
    is read, so a reader sees this process's own calls; ``verifier`` checks TabPFN tokens
    for ``add_credential(verify=True)``, ``url_verifier`` those of a credential with its own
    cloud URL (``add_credential(endpoint_url=..., verify=True)``).
    """

    def __init__(
        self,
        store: Store,
        vault: TokenVault | None,
        keys: KeyManager,
        *,
        bus: Publisher | None = None,
        usage: UsageRecorder | None = None,
        verifier: TokenVerifier | None = None,
        url_verifier: UrlTokenVerifier | None = None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.keys = keys
        self.verifier = verifier
        self.url_verifier = url_verifier
        self._bus = bus
        self._usage = usage
        self._owns_store = False
        self._owned_bus: InvalidationBus | None = None
        if bus is not None:
            keys.add_change_listener(self._key_changed)

    def __repr__(self) -> str:
        return f"Admin(vault={self.vault!r}, keys={self.keys!r})"

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        generate_secret: bool = False,
        bus: Publisher | None = None,
        upstream_transport: httpx.BaseTransport | None = None,
    ) -> Admin:
        """An Admin over ``store`` (or the store the settings name, closed by ``close()``).

        ``generate_secret`` is passed to ``TokenVault.from_settings(generate=...)``.
        ``bus``: where changes are announced (default: the replicas' channel the settings
        name, publish only, closed by ``close()``). ``upstream_transport``: the httpx
        transport token verification uses (default: the network).
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
        owned_bus: InvalidationBus | None = None
        try:
            from tabpfn_gateway.secret_fingerprint import check_shared_secrets

            check_shared_secrets(settings, store)
            keys = KeyManager.from_settings(settings, store=store)
            if bus is None:
                from tabpfn_gateway.gateway._invalidation import bus_from_settings

                # Never started: this process only announces; running servers listen.
                bus = owned_bus = bus_from_settings(settings)
        except BaseException:
            if owns_store:
                store.close()
            raise
        upstream_url, timeout = settings.upstream_url, settings.upstream_connect_timeout_seconds

        def verifier(token: SecretStr) -> Any:
            return url_verifier(token, upstream_url)

        def url_verifier(token: SecretStr, base_url: str) -> Any:
            # Imported here: most admin commands verify no token, and the protocol client
            # (httpx, tenacity, its messages) is ~150 ms of a CLI run.
            from tabpfn_gateway.protocol import verify_tabpfn_token

            return verify_tabpfn_token(
                token,
                base_url=base_url,
                transport=upstream_transport,
                timeout=timeout,
            )

        admin = cls(store, vault, keys, bus=bus, verifier=verifier, url_verifier=url_verifier)
        admin._owns_store = owns_store
        admin._owned_bus = owned_bus
        return admin

    def close(self) -> None:
        """Flush the key manager; close the store and the bus if this Admin opened them."""
        try:
            self.keys.close()
        finally:
            if self._owned_bus is not None:
                self._owned_bus.close()
            if self._owns_store:
                self.store.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _publish(self, message: str, *, counted: bool = False) -> None:
        # ``counted``: the change's own transaction bumped the counter already.
        if self._bus is not None:
            self._bus.publish(message)
        if counted:
            return
        # Every process polls this counter (gateway._changes): the bound holds without a bus.
        try:
            self.store.bump_counter(CHANGES_COUNTER)
        except StoreError:  # the change is made; the key cache TTL bounds the rest
            logger.warning("could not bump the change counter; caches expire on their own")

    def _key_changed(self, key_id: str) -> None:
        # KeyManager bumps the change counter in the key change's transaction.
        self._publish(key_changed(key_id), counted=True)

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
            raise InvalidRequest("A principal kind is 'user' or 'team'.")
        now = utcnow()
        principal = Principal(id=new_id(), name=name, kind=kind, created_at=now)
        with self.store.atomic() as tx:
            stored = tx.add_principal(principal)
            tx.record_audit(
                _event(actor, "principal.add", "principal", stored.id, name=name, kind=kind)
            )
        logger.info("Added %s %s (%s) by %s", kind, name, stored.id, actor)
        return stored

    def add_setup_principal(self, requested: str | None, *, actor: str = "setup") -> Principal:
        """Add the user principal of a self-service setup, named ``setup:<requested>-<random>``
        (``requested`` defaults to ``user``).

        Admin-chosen names cannot contain ``:``, so setup can neither take a name an admin
        means to use nor learn which names exist; the random part keeps two setups asking
        for the same name apart (neither is refused).
        """
        label = check_setup_label(requested) or "user"
        name = f"{SETUP_PRINCIPAL_PREFIX}{label}-{secrets.token_hex(6)}"
        now = utcnow()
        principal = Principal(id=new_id(), name=name, kind="user", created_at=now)
        with self.store.atomic() as tx:
            stored = tx.add_principal(principal)
            tx.record_audit(
                _event(actor, "principal.add", "principal", stored.id, name=name, kind="user")
            )
        logger.info("Added setup user %s (%s) by %s", name, stored.id, actor)
        return stored

    def get_principal(self, id_or_name: str) -> Principal:
        """The principal with this id, else with this name; ``PrincipalNotFound``."""
        found = self.store.get_principal(id_or_name) or self.store.get_principal_by_name(id_or_name)
        if found is None:
            raise PrincipalNotFound("No principal with that id or name.")
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
        endpoint_url: str | None = None,
        verify: TokenVerifier | bool | None = None,
        actor: str = "system",
    ) -> UpstreamCredential:
        """Store a TabPFN token for principal ``owner`` (id or name), encrypted.

        ``endpoint_url``: the credential's own TabPFN cloud URL (its API root, e.g.
        ``https://api.priorlabs.ai``); its calls go there instead of the configured
        ``upstream_url``, and signed URLs on its origin are allowed for its calls only.
        With ``verify`` (True: this Admin's ``verifier``, or ``url_verifier`` against
        ``endpoint_url``; or a verifier of your own), the token is checked first: an invalid
        token is refused (``UpstreamAuthenticationFailed``) and stored nowhere; an
        unreachable upstream raises ``UpstreamUnavailable`` (retryable), also storing nothing.
        """
        from tabpfn_gateway.vault import check_token_text

        vault = self._require_vault()
        secret = check_token_text(token)
        register_secret(secret.get_secret_value())
        url = None if endpoint_url is None else check_cloud_url(endpoint_url)
        if not isinstance(label, str) or not label.strip() or len(label) > _MAX_LABEL_LENGTH:
            raise InvalidRequest(f"A credential label is 1-{_MAX_LABEL_LENGTH} characters.")
        principal = self.get_principal(owner)
        verifier = self._verifier(verify, url)
        verified: str | None = None
        if verifier is not None:
            status = verifier(secret)
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
            endpoint_url=url,
        )
        details: dict[str, Any] = {} if url is None else {"endpoint_url": url}
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
                    **details,
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
            raise CredentialNotFound("No upstream credential with that id.")
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
                raise CredentialNotFound("No upstream credential with that id.")
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
            tx.bump_counter(CHANGES_COUNTER)
        logger.info("Removed credential %s by %s", credential_id, actor)
        # Keys bound to it are refused on every replica from their next request.
        self._publish(credential_changed(credential_id), counted=True)

    def upstream_token(self, credential_id: str) -> SecretStr:
        """Deprecated: the decrypted TabPFN token of a credential.

        Decrypting tokens for calls is the gateway's hot path, not administration: the
        gateway's ``Authoriser`` does it (``gateway.authoriser.upstream_token(caller)``), and
        ``TokenVault.decrypt`` is the primitive.
        """
        import warnings

        warnings.warn(
            "Admin.upstream_token is deprecated; the gateway's Authoriser decrypts tokens for "
            "calls (TokenVault.decrypt is the primitive).",
            DeprecationWarning,
            stacklevel=2,
        )
        vault = self._require_vault()
        credential = self.get_credential(credential_id)
        if credential.kind != "cloud":
            # Its secret is a container's token and headers: never a TabPFN token upstream.
            raise UpstreamKindMismatch(
                "This key's credential is a self-hosted inference container: use POST /predict "
                "(tabpfn_client.hosted, or GatewayClassifier), not the TabPFN cloud protocol."
            )
        return vault.decrypt(credential.encrypted_token, credential_id=credential.id)

    def rotate_secrets(self, *, actor: str = "system") -> RotationReport:
        """Re-encrypt every credential under the current secret, in one transaction.

        Every row is decrypted (so a row no configured secret opens stops the rotation with
        ``TokenDecryptionFailed`` naming it, and nothing changes); rows made with an older
        secret are re-encrypted.
        """
        from tabpfn_gateway.secret_fingerprint import SECRET_STATE

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
            # From now on the database belongs to the current secret (and the old one may
            # leave PREVIOUS_SECRET_KEYS once every replica runs with the new one).
            tx.put_state(SECRET_STATE, vault.shared_fingerprint)
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

    # -- keys ---------------------------------------------------------------------------

    def create_key(
        self,
        owner: str,
        credential: str | None,
        name: str,
        scopes: Iterable[str] | None = None,
        expires_at: datetime | None = None,
        *,
        admin: bool = False,
        actor: str = "system",
    ) -> CreatedKey:
        """A new key for principal ``owner`` (id or name), bound to ``credential``; its
        plaintext is in the result and nowhere else (see ``KeyManager.create``).

        ``credential`` None for an inference key: the owner's only credential; with none or
        several, ``InvalidRequest`` says so and how to list them.
        """
        principal = self.get_principal(owner)
        if credential is None and not admin:
            credential = self._only_credential(principal)
        return self.keys.create(
            principal.id,
            credential,
            name,
            DEFAULT_SCOPES if scopes is None else scopes,
            _aware(expires_at, "expires_at"),
            admin=admin,
            actor=actor,
        )

    def _only_credential(self, principal: Principal) -> str:
        owned = self.store.list_credentials(owner_id=principal.id, limit=2).items
        if len(owned) == 1:
            return owned[0].id
        if not owned:
            raise InvalidRequest(
                f"Principal {principal.name!r} has no TabPFN credential yet: add one first "
                f"(tabpfn-gateway credentials add --owner {principal.name} --label ...)."
            )
        raise InvalidRequest(
            f"Principal {principal.name!r} has several credentials: say which one the key "
            f"uses (--credential ID; `tabpfn-gateway credentials list --owner "
            f"{principal.name}` lists them)."
        )

    def get_key(self, key: str) -> ApiKey:
        """The key with this id or display prefix; ``KeyNotFound``."""
        return self.keys.get(key_id_of(key))

    def list_keys(
        self, *, owner: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[ApiKey]:
        """Keys (of principal ``owner``, id or name, if given), newest first, one page."""
        owner_id = self.get_principal(owner).id if owner is not None else None
        return self.keys.list(owner=owner_id, limit=limit, cursor=cursor)

    def revoke_key(self, key: str, *, actor: str = "system") -> ApiKey:
        """Revoke for good; every replica refuses the key from its next request."""
        return self.keys.revoke(key_id_of(key), actor=actor)

    def disable_key(self, key: str, *, actor: str = "system") -> ApiKey:
        """Refuse the key until ``enable_key``."""
        return self.keys.disable(key_id_of(key), actor=actor)

    def enable_key(self, key: str, *, actor: str = "system") -> ApiKey:
        """Accept a disabled key again (a revoked key stays revoked)."""
        return self.keys.enable(key_id_of(key), actor=actor)

    def set_key_expiry(
        self, key: str, expires_at: datetime | None, *, actor: str = "system"
    ) -> ApiKey:
        """Move the key's expiry (aware, in the future) or remove it (None); audited."""
        return self.keys.set_expiry(key_id_of(key), _aware(expires_at, "expires_at"), actor=actor)

    def rotate_key(
        self,
        key: str,
        *,
        grace: timedelta = timedelta(hours=24),
        request_id: str | None = None,
        actor: str = "system",
    ) -> CreatedKey:
        """A new secret for the key; the old one works for ``grace`` (see ``KeyManager.rotate``)."""
        return self.keys.rotate(key_id_of(key), grace=grace, request_id=request_id, actor=actor)

    def owner_names(self, owner_ids: Iterable[str]) -> dict[str, str]:
        """Principal names by id, for the ids that still exist (to label listings)."""
        names: dict[str, str] = {}
        for owner_id in set(owner_ids):
            principal = self.store.get_principal(owner_id)
            if principal is not None:
                names[owner_id] = principal.name
        return names

    # -- usage --------------------------------------------------------------------------

    def list_usage(
        self,
        *,
        key_id: str | None = None,
        owner: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        errors_only: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[UsageEvent]:
        """Usage events matching every filter given (``owner``: id or name; ``errors_only``:
        the refused and failed calls, status 400 or more), newest first."""
        owner_id = self.get_principal(owner).id if owner is not None else None
        since, until = _aware(since, "since"), _aware(until, "until")
        self._flush_usage()
        return self.store.list_usage(
            key_id=key_id,
            owner_id=owner_id,
            since=since,
            until=until,
            errors_only=errors_only,
            limit=limit,
            cursor=cursor,
        )

    def summarize_usage(
        self,
        *,
        key_id: str | None = None,
        owner: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageSummary]:
        """Calls, errors, rows, bytes and latency per key and operation."""
        owner_id = self.get_principal(owner).id if owner is not None else None
        since, until = _aware(since, "since"), _aware(until, "until")
        self._flush_usage()
        return list(
            self.store.summarize_usage(key_id=key_id, owner_id=owner_id, since=since, until=until)
        )

    def _flush_usage(self) -> None:
        # This process's buffered events are written first so a reader sees its own calls; a
        # failed flush never fails the read (the flusher retries; the reader sees the store).
        if self._usage is not None:
            try:
                self._usage.flush()
            except StoreError:
                logger.warning("usage flush before a usage read failed; answering from the store")

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

    # -- governance: policies, teams, reports, retention (tabpfn_gateway.governance) -------

    @property
    def governance(self) -> GovernanceAdmin:
        """The governance service over this Admin's store (policies, teams, reports)."""
        found: GovernanceAdmin | None = getattr(self, "_governance", None)
        if found is None:
            from tabpfn_gateway.governance._admin import GovernanceAdmin

            found = GovernanceAdmin(self.store)
            self._governance = found
        return found

    def _policies_changed(self, key_id: str | None = None) -> None:
        from tabpfn_gateway.gateway._invalidation import policy_changed

        self._publish(policy_changed(key_id))

    def set_policy(
        self,
        target: str,
        changes: Mapping[str, Any],
        *,
        kind: PolicyTarget = "principal",
        actor: str = "system",
        replace: bool = False,
    ) -> Policy:
        """Set fields of a principal's (id or name) or a key's policy: rate limits, fit cap,
        credit budget, alert thresholds, CIDR allowlist (keys). Omitted fields keep their
        value, None removes one; every replica applies it at once (docs/governance.md)."""
        target = key_id_of(target) if kind == "key" else target
        policy = self.governance.set_policy(
            target, dict(changes), kind=kind, actor=actor, replace=replace
        )
        self._policies_changed(policy.target_id if kind == "key" else None)
        return policy

    def get_policy(self, target: str, *, kind: PolicyTarget = "principal") -> Policy | None:
        """The policy of a principal or key, or None."""
        return self.governance.get_policy(key_id_of(target) if kind == "key" else target, kind=kind)

    def clear_policy(
        self, target: str, *, kind: PolicyTarget = "principal", actor: str = "system"
    ) -> bool:
        """Remove a principal's or key's policy. False if it had none."""
        target = key_id_of(target) if kind == "key" else target
        removed = self.governance.clear_policy(target, kind=kind, actor=actor)
        self._policies_changed()
        return removed

    def list_policies(self) -> list[Policy]:
        """Every policy."""
        return self.governance.list_policies()

    def effective_policy(self, key: str) -> EffectivePolicy:
        """The tightest-of policy over a key (its own, its owner's, its teams')."""
        return self.governance.effective_policy(key_id_of(key))

    def budget_status(self, key: str) -> list[BudgetStatus]:
        """The budgets over a key with spent and remaining credits this period."""
        return self.governance.budget_status(key_id_of(key))

    def add_member(self, team: str, user: str, *, actor: str = "system") -> Membership:
        """Add a user to a team (names or ids); the team's limits then cover the user."""
        membership = self.governance.add_member(team, user, actor=actor)
        self._policies_changed()
        return membership

    def remove_member(self, team: str, user: str, *, actor: str = "system") -> None:
        """Remove a user from a team."""
        self.governance.remove_member(team, user, actor=actor)
        self._policies_changed()

    def list_members(self, team: str) -> list[Membership]:
        """A team's members."""
        return self.governance.list_members(team)

    def teams_of(self, user: str) -> list[Membership]:
        """The teams a user belongs to."""
        return self.governance.teams_of(user)

    def usage_report(
        self,
        by: str | list[str] | tuple[str, ...] = (),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key_id: str | None = None,
        principal: str | None = None,
    ) -> UsageReport:
        """Usage rolled up by principal/team/key/operation/day/month (``"team,day"``)."""
        since, until = _aware(since, "since"), _aware(until, "until")
        self._flush_usage()
        return self.governance.usage_report(
            by, since=since, until=until, key_id=key_id, principal=principal
        )

    def prune(self, older_than: timedelta, *, actor: str = "system") -> PruneReport:
        """Delete raw usage and audit events older than ``older_than``; daily roll-ups stay."""
        self._flush_usage()
        return self.governance.prune(older_than, actor=actor)

    def _verifier(
        self, verify: TokenVerifier | bool | None, url: str | None = None
    ) -> TokenVerifier | None:
        if verify is None or verify is False:
            return None
        if verify is True:
            if url is not None:
                url_verifier = self.url_verifier
                if url_verifier is None:
                    raise ConfigurationError(
                        "This Admin cannot verify a token against its own cloud URL; "
                        "pass verify=None."
                    )
                return lambda token: url_verifier(token, url)
            if self.verifier is None:
                raise ConfigurationError("This Admin has no token verifier; pass verify=None.")
            return self.verifier
        return verify

    def _require_vault(self) -> TokenVault:
        if self.vault is None:
            raise SecretKeyMissing()
        return self.vault


def check_cloud_url(url: object) -> str:
    """A cloud credential's own TabPFN URL, normalised (no trailing slash); else
    ``InvalidRequest``. An operator sets it, like ``upstream_url``: private hosts are allowed."""
    from tabpfn_gateway.hosted import check_endpoint_url
    from tabpfn_gateway.protocol._base import check_base_url

    try:
        checked = check_endpoint_url(url)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message.replace("endpoint_url", "A cloud URL", 1)) from None
    try:
        return check_base_url(checked)
    except ConfigurationError:
        raise InvalidRequest(
            "A cloud URL must be an absolute http(s) URL without a query string, e.g. "
            "https://api.priorlabs.ai."
        ) from None


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidRequest(f"{name} needs a timezone (e.g. 2030-01-01T00:00:00Z).")
    return value


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
