"""Item 6: a rotation replay answers only its own caller, is audited, ends at revocation."""

from __future__ import annotations

from typing import Any

import httpx

from gateway_support import add_admin_key
from security_support import Stack

ADMIN = "/api/v1/admin"


def _rotate(stack: Stack, admin_key: str, key_id: str, request_id: str) -> httpx.Response:
    return stack.http.post(
        f"{ADMIN}/keys/{key_id}/rotate",
        json={"grace_seconds": 0, "request_id": request_id},
        headers=stack.bearer(admin_key),
    )


def _audit(stack: Stack, action: str) -> list[dict[str, Any]]:
    answer = stack.http.get(
        f"{ADMIN}/audit",
        params={"action": action, "limit": 100},
        headers=stack.bearer(stack.admin_key),
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_replay_by_another_admin_is_refused_and_reveals_no_key(stack: Stack) -> None:
    other_admin = add_admin_key(stack.gateway, "second-ops")
    key_id = stack.alice.key_id
    first = _rotate(stack, stack.admin_key, key_id, "change-42")
    assert first.status_code == 200, first.text
    new_key = first.json()["api_key"]

    # The request id is public: the key.rotate audit event names it.
    (event,) = _audit(stack, "key.rotate")
    assert event["details"]["request_id"] == "change-42"

    stolen = _rotate(stack, other_admin, key_id, "change-42")
    assert stolen.status_code == 409, stolen.text
    assert stolen.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    assert new_key not in stolen.text
    assert "api_key" not in stolen.json()
    # Refusing is all it did: the first admin's new key still works, no rotation happened.
    assert stack.http.get("/protected/", headers=stack.bearer(new_key)).status_code == 200
    assert len(_audit(stack, "key.rotate")) == 1
    (refused,) = _audit(stack, "key.rotate.replay_refused")
    assert refused["actor"].startswith("key:")
    assert refused["details"]["request_id"] == "change-42"
    assert refused["details"]["reason"] == "another_actor"
    assert new_key not in str(refused)

    # The original caller still gets its own key back.
    again = _rotate(stack, stack.admin_key, key_id, "change-42")
    assert again.status_code == 200, again.text
    assert again.json()["api_key"] == new_key


def test_replay_is_audited_without_the_key(stack: Stack) -> None:
    key_id = stack.bob.key_id
    first = _rotate(stack, stack.admin_key, key_id, "retry-me")
    assert first.status_code == 200, first.text
    new_key = first.json()["api_key"]
    assert _audit(stack, "key.rotate.replayed") == []

    again = _rotate(stack, stack.admin_key, key_id, "retry-me")
    assert again.status_code == 200, again.text
    assert again.json()["api_key"] == new_key

    (replayed,) = _audit(stack, "key.rotate.replayed")
    (rotated,) = _audit(stack, "key.rotate")
    assert replayed["actor"] == rotated["actor"]
    assert replayed["target_id"] == key_id
    assert replayed["details"]["request_id"] == "retry-me"
    everything = stack.http.get(
        f"{ADMIN}/audit", params={"limit": 1000}, headers=stack.bearer(stack.admin_key)
    ).text
    assert new_key not in everything


def test_replay_after_revocation_is_refused(stack: Stack) -> None:
    key_id = stack.alice.key_id
    first = _rotate(stack, stack.admin_key, key_id, "before-revoke")
    assert first.status_code == 200, first.text
    new_key = first.json()["api_key"]
    revoked = stack.http.post(
        f"{ADMIN}/keys/{key_id}/revoke", headers=stack.bearer(stack.admin_key)
    )
    assert revoked.status_code == 200, revoked.text

    again = _rotate(stack, stack.admin_key, key_id, "before-revoke")
    # 409, not 401: the admin's own key is fine; the key it names is revoked.
    assert again.status_code == 409, again.text
    assert again.json()["error_code"] == "CONFLICT"
    assert "revoked" in again.json()["message"].lower()
    assert new_key not in again.text
    assert _audit(stack, "key.rotate.replayed") == []
    (refused,) = _audit(stack, "key.rotate.replay_refused")
    assert refused["details"]["reason"] == "revoked"
    # Nothing recoverable is left in the database for a revoked key.
    record = stack.gateway.store.get_key(key_id)
    assert record is not None
    assert record.rotation_ciphertext is None
