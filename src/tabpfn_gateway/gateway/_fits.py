"""Fit ownership: a fit made through the gateway belongs to the principal whose key made it."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from uuid import UUID

from tabpfn_gateway.errors import Conflict, CredentialNotFound, FittedModelNotFound
from tabpfn_gateway.gateway._authoriser import Caller
from tabpfn_gateway.store import FittedModel, Store

__all__ = ["FitOwnership", "normalise_fit_id"]

logger = logging.getLogger(__name__)

_CACHE_SIZE = 50_000


def normalise_fit_id(value: str | UUID) -> str:
    """Fit ids are UUIDs; one spelling (lowercase, dashed) keeps lookups exact."""
    try:
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    except ValueError:
        raise FittedModelNotFound() from None


class FitOwnership:
    """Records and checks who owns each fit. Any other principal is told the fit does not
    exist (the same answer as for an unknown id: no oracle). Ownership never changes once
    recorded, so it is cached without expiry (the most recent ``cache_size`` fits)."""

    def __init__(self, store: Store, *, cache_size: int = _CACHE_SIZE) -> None:
        self._store = store
        self._cache_size = cache_size
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def owner_from_memory(self, fitted_train_set_id: str | UUID) -> str | None:
        """The owner of a fit if it is cached, else None (no I/O)."""
        try:
            fit_id = normalise_fit_id(fitted_train_set_id)
        except FittedModelNotFound:
            return None
        return self._cached(fit_id)

    def check(self, caller: Caller, fitted_train_set_id: str | UUID) -> str:
        """The normalised fit id if ``caller``'s principal owns it; else ``FittedModelNotFound``."""
        fit_id = normalise_fit_id(fitted_train_set_id)
        owner = self._cached(fit_id)
        if owner is None:
            model = self._store.get_fitted_model(fit_id)
            if model is None:
                raise FittedModelNotFound()
            owner = model.owner_id
            self._remember(fit_id, owner)
        if owner != caller.owner_id:
            raise FittedModelNotFound()
        return fit_id

    def claim(
        self,
        caller: Caller,
        fitted_train_set_id: str | UUID,
        *,
        task: str,
        rows: int | None = None,
        columns: int | None = None,
    ) -> str | None:
        """Record that a fit just made upstream belongs to ``caller``'s principal; the
        normalised fit id, or None when another principal already owns it."""
        fit_id = normalise_fit_id(fitted_train_set_id)
        if caller.credential_id is None:  # unreachable: no upstream call without a credential
            raise CredentialNotFound()
        model = FittedModel(
            id=fit_id,
            owner_id=caller.owner_id,
            credential_id=caller.credential_id,
            key_id=caller.key_id,
            task=task,
            n_rows=rows,
            n_cols=columns,
        )
        try:
            self._store.add_fitted_model(model)
        except Conflict:
            existing = self._store.get_fitted_model(fit_id)
            if existing is not None and existing.owner_id != caller.owner_id:
                # The upstream reused an id across principals (a shared token): keep the
                # first owner; the second is told "not found", never the other's model.
                logger.warning("fit %s is already owned by another principal", fit_id)
                return None
        self._remember(fit_id, caller.owner_id)
        return fit_id

    def _cached(self, fit_id: str) -> str | None:
        with self._lock:
            owner = self._owners.get(fit_id)
            if owner is not None:
                self._owners.move_to_end(fit_id)
            return owner

    def _remember(self, fit_id: str, owner: str) -> None:
        with self._lock:
            self._owners[fit_id] = owner
            self._owners.move_to_end(fit_id)
            while len(self._owners) > self._cache_size:
                self._owners.popitem(last=False)
