"""Upload ownership: a train or test set upload id belongs to the principal that prepared it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from uuid import UUID

from tabpfn_gateway.errors import NotFound
from tabpfn_gateway.gateway._authoriser import Caller
from tabpfn_gateway.store import Store

__all__ = ["UploadOwnership"]

_CACHE_SIZE = 50_000


class UploadOwnership:
    """Records who prepared each upload id (``prepare_*_upload``) and refuses every other
    principal in fit, submit_fit_job and predict with the answer an unknown id gets (404):
    two principals sharing one TabPFN token cannot use each other's uploads. Ownership never
    changes once recorded, so positive answers are cached without expiry."""

    def __init__(self, store: Store, *, cache_size: int = _CACHE_SIZE) -> None:
        self._store = store
        self._cache_size = cache_size
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, caller: Caller, upload_id: UUID | str, kind: str) -> None:
        """Record ``upload_id`` as ``caller``'s principal's (the first owner stays)."""
        upload = str(upload_id).lower()
        owner = self._store.add_upload_owner(upload, caller.owner_id, kind)
        self._remember(upload, owner)

    def from_memory(self, caller: Caller, upload_id: UUID | str) -> bool:
        """True if ``caller`` is known (cached) to own ``upload_id``; False: ask ``check``."""
        with self._lock:
            return self._owners.get(str(upload_id).lower()) == caller.owner_id

    def check(self, caller: Caller, upload_id: UUID | str) -> None:
        """Return if ``caller``'s principal prepared ``upload_id``; else ``NotFound`` (404)."""
        upload = str(upload_id).lower()
        with self._lock:
            owner = self._owners.get(upload)
        if owner is None:
            owner = self._store.get_upload_owner(upload)
            if owner is not None:
                self._remember(upload, owner)
        if owner != caller.owner_id:
            raise NotFound("No such upload.")

    def _remember(self, upload: str, owner: str) -> None:
        with self._lock:
            self._owners[upload] = owner
            self._owners.move_to_end(upload)
            while len(self._owners) > self._cache_size:
                self._owners.popitem(last=False)
