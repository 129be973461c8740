"""FakeTabPFN's storage: signed upload URLs taking chunked PUTs, dedup, signed downloads."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tabpfn_gateway.protocol.messages import FileInfo, FileUploadInfo
from tabpfn_gateway.testing._fake.common import Refusal

__all__ = ["DOWNLOAD_PREFIX", "STORAGE_PREFIX", "SignedStorage", "Upload"]

STORAGE_PREFIX = "/_fake/storage"
DOWNLOAD_PREFIX = "/_fake/download"


@dataclass
class _UploadFile:
    chunks: int
    parts: dict[int, bytes] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.chunks

    def data(self) -> bytes:
        return b"".join(self.parts[i] for i in range(self.chunks))


@dataclass
class Upload:
    """One announced train or test set: its files (in chunks), owner and dedup key."""

    id: str
    token: str
    files: dict[str, _UploadFile]
    dedup_key: tuple[Any, ...] | None
    fitted_train_set_id: str | None = None

    @property
    def complete(self) -> bool:
        return all(f.complete for f in self.files.values())

    def data(self, name: str) -> bytes:
        return self.files[name].data()


class SignedStorage:
    """Uploads and downloads behind HMAC-signed, expiring URLs (a stand-in for cloud storage)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signing_key = secrets.token_bytes(32)
        self._uploads: dict[str, Upload] = {}
        self._dedup: dict[tuple[Any, ...], str] = {}
        self._downloads: dict[str, bytes] = {}

    # -- signing -------------------------------------------------------------------------

    def _sign(self, method: str, path: str, expires: int) -> str:
        message = f"{method}\n{path}\n{expires}".encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()

    def signed_url(self, origin: str, method: str, path: str, ttl: float) -> str:
        expires = int(time.time() + ttl)
        return f"{origin}{path}?expires={expires}&sig={self._sign(method, path, expires)}"

    def check_signature(self, method: str, path: str, query: Mapping[str, str]) -> None:
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            raise Refusal(403, "Missing or malformed signature.") from None
        expected = self._sign(method, path, expires)
        if not hmac.compare_digest(expected, query.get("sig", "")):
            raise Refusal(403, "Invalid signature.")
        if expires < time.time():
            raise Refusal(403, "The signed URL has expired.")

    # -- uploads -------------------------------------------------------------------------

    def duplicate_of(self, dedup_key: tuple[Any, ...]) -> str | None:
        """The id of a complete upload with the same content (the cloud answers 409)."""
        with self._lock:
            return self._dedup.get(dedup_key)

    def new_upload(
        self,
        origin: str,
        token: str,
        files: Mapping[str, FileInfo],
        dedup_key: tuple[Any, ...] | None,
        *,
        chunks: int,
        ttl: float,
        fitted_train_set_id: str | None = None,
    ) -> tuple[Upload, dict[str, FileUploadInfo]]:
        """Announce an upload: ``chunks`` signed PUT URLs a file (fewer for tiny files)."""
        upload_id = str(uuid.uuid4())
        upload = Upload(upload_id, token, {}, dedup_key, fitted_train_set_id)
        infos: dict[str, FileUploadInfo] = {}
        for name, info in files.items():
            count = chunks
            if info.size_bytes is not None:
                count = max(1, min(count, info.size_bytes))
            upload.files[name] = _UploadFile(count)
            urls = [
                self.signed_url(origin, "PUT", f"{STORAGE_PREFIX}/{upload_id}/{name}/{i}", ttl)
                for i in range(count)
            ]
            infos[name] = FileUploadInfo(
                signed_urls=urls,
                expires_at=time.time() + ttl,
                required_headers={
                    "Content-Type": "application/octet-stream",
                    "X-Goog-Meta-Fake-Upload-Id": upload_id,
                },
            )
        with self._lock:
            self._uploads[upload_id] = upload
        return upload, infos

    def store_chunk(self, upload_id: str, name: str, index: int, data: bytes) -> None:
        """Keep one PUT chunk; a complete upload becomes findable by its dedup key."""
        with self._lock:
            upload = self._uploads.get(upload_id)
            file = upload.files.get(name) if upload else None
            if upload is None or file is None or not 0 <= index < file.chunks:
                raise Refusal(404, "No such upload URL.")
            file.parts[index] = data
            if upload.complete and upload.dedup_key is not None:
                self._dedup.setdefault(upload.dedup_key, upload.id)

    def complete_upload(self, upload_id: str, token: str) -> Upload:
        """The upload, if ``token`` made it and every chunk arrived."""
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None or upload.token != token:
            raise Refusal(404, "No such upload.", error_code="NOT_FOUND")
        if not upload.complete:
            raise Refusal(400, "The upload is not complete: PUT every chunk first.")
        return upload

    # -- downloads -----------------------------------------------------------------------

    def put_download(self, data: bytes) -> str:
        download_id = str(uuid.uuid4())
        with self._lock:
            self._downloads[download_id] = data
        return download_id

    def download(self, download_id: str) -> bytes:
        with self._lock:
            data = self._downloads.get(download_id)
        if data is None:
            raise Refusal(404, "No such download.")
        return data
