"""Self-service setup (the seed's flow): a verified TabPFN token in, a principal, its
encrypted credential and an inference key out, in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from tabpfn_gateway.config import Settings
from tabpfn_gateway.errors import UpstreamAuthenticationFailed
from tabpfn_gateway.store import Principal, Store, UpstreamCredential

if TYPE_CHECKING:
    from tabpfn_gateway.keys import CreatedKey
    from tabpfn_gateway.protocol import TokenStatus
    from tabpfn_gateway.vault import TokenVault

__all__ = ["SetupResult", "check_setup_input", "create_setup", "self_service_setup"]


@dataclass(frozen=True)
class SetupResult:
    """What self-service setup made: a principal, its encrypted credential, and a key."""

    principal: Principal
    credential: UpstreamCredential
    key: CreatedKey = field(repr=False)


def self_service_setup(
    tabpfn_token: str | SecretStr,
    *,
    name: str | None,
    actor: str,
    settings: Settings,
    store: Store,
    vault: TokenVault,
    verify: Callable[[SecretStr], TokenStatus],
) -> SetupResult:
    """Verify the token upstream, then create the principal, its encrypted credential and an
    inference key in one transaction (see ``Gateway.setup``)."""
    token = check_setup_input(tabpfn_token, name)
    # Asked once, before the transaction (no network call while it holds the database).
    status = verify(token)
    return create_setup(
        token, name, status, actor=actor, settings=settings, store=store, vault=vault
    )


def check_setup_input(tabpfn_token: str | SecretStr, name: str | None) -> SecretStr:
    """The token as a ``SecretStr`` once it and ``name`` are well formed (``InvalidRequest``):
    checked before anything is counted or asked upstream."""
    from tabpfn_gateway.admin import check_setup_label
    from tabpfn_gateway.vault import check_token_text

    token = check_token_text(tabpfn_token, "tabpfn_token")
    check_setup_label(name)
    return token


def create_setup(
    token: SecretStr,
    name: str | None,
    status: TokenStatus,
    *,
    actor: str,
    settings: Settings,
    store: Store,
    vault: TokenVault,
) -> SetupResult:
    """After verification answered ``status``: the principal (``setup:<name>-<random>``, see
    ``Admin.add_setup_principal``), its credential and an inference key, in one transaction.
    ``UpstreamAuthenticationFailed`` for an invalid token (nothing written)."""
    from tabpfn_gateway.admin import Admin
    from tabpfn_gateway.keys import DEFAULT_SCOPES, KeyManager
    from tabpfn_gateway.protocol import TokenStatus

    if status is TokenStatus.INVALID:
        raise UpstreamAuthenticationFailed("The upstream rejected this TabPFN token.")
    with store.atomic() as tx:
        tx_keys = KeyManager.from_settings(settings, store=tx)
        tx_admin = Admin(tx, vault, tx_keys)
        principal = tx_admin.add_setup_principal(name, actor=actor)
        # Recorded as verified (verified_at, and the audit's verification) with that answer.
        credential = tx_admin.add_credential(
            principal.id, token, "setup", verify=lambda _token: status, actor=actor
        )
        created = tx_keys.create(principal.id, credential.id, "setup", DEFAULT_SCOPES, actor=actor)
    return SetupResult(principal=principal, credential=credential, key=created)
