"""Upload ownership: a train or test set upload id belongs to the principal that uploaded it."""

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
    """Records which principals may use each upload id and refuses every other principal in
    fit, submit_fit_job and predict with the answer an unknown id gets (404): two principals
    sharing one TabPFN token cannot use each other's uploads.

    A principal may use an upload id whose X it uploaded through the gateway (recorded by
    that upload, before it answers, from the upload URL the principal was given), or
    one the upstream answered it as the duplicate of the content it sent (its own
    ``prepare_*`` with the same content hash, recorded then): two team members uploading the
    same data on a shared token both fit on it, while an id read from somewhere else stays
    refused. Ownership is never withdrawn, so positive answers are cached without expiry."""

    def __init__(self, store: Store, *, cache_size: int = _CACHE_SIZE) -> None:
        self._store = store
        self._cache_size = cache_size
        self._owned: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, caller: Caller, upload_id: UUID | str, kind: str) -> None:
        """Record that ``caller``'s principal may use ``upload_id``."""
        pair = (str(upload_id).lower(), caller.owner_id)
        if self._known(pair):
            return
        self._store.add_upload_owner(pair[0], pair[1], kind)
        self._remember(pair)

    def from_memory(self, caller: Caller, upload_id: UUID | str) -> bool:
        """True if ``caller`` is known (cached) to own ``upload_id``; False: ask ``check``."""
        return self._known((str(upload_id).lower(), caller.owner_id))

    def check(self, caller: Caller, upload_id: UUID | str) -> None:
        """Return if ``caller``'s principal may use ``upload_id``; else ``NotFound`` (404)."""
        pair = (str(upload_id).lower(), caller.owner_id)
        if self._known(pair):
            return
        if not self._store.is_upload_owner(*pair):
            raise NotFound("No such upload (or none of its files was uploaded yet).")
        self._remember(pair)

    def _known(self, pair: tuple[str, str]) -> bool:
        with self._lock:
            return pair in self._owned

    def _remember(self, pair: tuple[str, str]) -> None:
        with self._lock:
            self._owned[pair] = None
            self._owned.move_to_end(pair)
            while len(self._owned) > self._cache_size:
                self._owned.popitem(last=False)
