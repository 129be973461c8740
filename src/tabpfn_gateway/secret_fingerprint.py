"""The secret is shared or refused: the database keeps a fingerprint of the secret (and key
pepper) it was set up with, and a process holding another one refuses to start or write."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import SecretStr

from tabpfn_gateway.errors import ConfigurationError, SchemaNotCurrent

if TYPE_CHECKING:
    from tabpfn_gateway.config import Settings
    from tabpfn_gateway.store import Store

__all__ = ["PEPPER_STATE", "SECRET_STATE", "check_shared_secrets", "secret_fingerprint"]

logger = logging.getLogger(__name__)

SECRET_STATE = "secret_fingerprint"  # noqa: S105 - a row name, not a secret
PEPPER_STATE = "pepper_fingerprint"


def secret_fingerprint(secret: SecretStr | bytes) -> str:
    """A one-way, purpose-bound fingerprint (HKDF): equal secrets, equal fingerprints; the
    fingerprint says nothing about the secret."""
    from tabpfn_gateway.vault import derive_key

    raw = secret if isinstance(secret, SecretStr) else SecretStr(secret.decode("utf-8"))
    return derive_key(raw, "secret fingerprint", 16).hex()


def check_shared_secrets(settings: Settings, store: Store) -> None:
    """Record the active secret's and pepper's fingerprints on first use; refuse a process
    whose secret (or pepper) matches none recorded, with one line naming the setting.

    A secret being rotated in (the old one still in ``PREVIOUS_SECRET_KEYS``) is accepted;
    ``Admin.rotate_secrets`` then records the new fingerprint.
    """
    if settings.database_url.startswith("memory://"):
        return
    from tabpfn_gateway.keys.hashing import peppers_from_settings
    from tabpfn_gateway.vault import configured_secrets

    secrets = configured_secrets(settings)
    if not secrets:
        return  # nothing can be encrypted here: the vault refuses every token on its own
    pepper, previous_peppers = peppers_from_settings(settings)
    try:
        _check(
            store,
            SECRET_STATE,
            [secret_fingerprint(s) for s in secrets],
            "TABPFN_GATEWAY_SECRET_KEY does not match the secret this database was set up "
            "with: use the same TABPFN_GATEWAY_SECRET_KEY on every replica and CLI.",
        )
        _check(
            store,
            PEPPER_STATE,
            [secret_fingerprint(p) for p in (pepper, *previous_peppers)],
            "TABPFN_GATEWAY_KEY_PEPPER (or the secret it derives from) does not match the one "
            "this database's keys were made with: use the same on every replica and CLI.",
        )
    except SchemaNotCurrent:
        logger.debug("no gateway_state table yet: the secret fingerprint is checked later")


def _check(store: Store, name: str, mine: list[str], message: str) -> None:
    stored = store.claim_state(name, mine[0])
    if stored not in mine:
        raise ConfigurationError(message)
