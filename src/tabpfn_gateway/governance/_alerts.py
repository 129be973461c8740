"""Budget alerts: an audit event, listeners (the server's metric), and a signed JSON webhook
sent from a background thread with retries, never on the request path."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import httpx

from tabpfn_gateway.store.base import Store
from tabpfn_gateway.store.records import AuditEvent, new_id, utcnow

__all__ = ["SIGNATURE_HEADER", "AlertDispatcher", "BudgetAlert", "WebhookSender", "sign_payload"]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-TabPFN-Gateway-Signature"
TIMESTAMP_HEADER = "X-TabPFN-Gateway-Timestamp"


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A budget crossed ``threshold`` percent in a period: who, which bucket, how much."""

    subject_id: str
    subject_level: str
    subject_name: str
    bucket: str
    threshold: int
    spent: int
    budget: int
    mode: str
    at: datetime
    #: What ``spent`` and ``budget`` count: ``credits``, ``cells`` (rows x columns) or ``calls``.
    unit: str = "credits"

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["at"] = self.at.isoformat()
        body["event"] = "budget.threshold"
        return body


def sign_payload(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` HMAC over ``timestamp + "." + body``: the receiver recomputes it with
    the shared secret and rejects old timestamps (replays)."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class WebhookSender:
    """Posts JSON bodies to one URL from a daemon thread: signed, retried with exponential
    backoff (``attempts`` tries, ``backoff`` seconds doubling), dropped with a warning after
    the last try. ``send`` only enqueues: it never blocks a request."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        max_queue: int = 10_000,
    ) -> None:
        self._url = url
        self._secret = secret
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._client = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="budget-webhook", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return "WebhookSender(url=<configured>)"

    def send(self, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.failed += 1
            logger.warning("Budget webhook queue is full; an alert was dropped")

    def _post(self, body: dict[str, Any]) -> bool:
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign_payload(self._secret, timestamp, payload),
        }
        try:
            response = self._client.post(self._url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("Budget webhook failed: %s", type(exc).__name__)
            return False
        if response.status_code >= 300:
            logger.warning("Budget webhook answered %d", response.status_code)
            return False
        return True

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            delay = self._backoff
            for attempt in range(self._attempts):
                if self._post(body):
                    self.delivered += 1
                    break
                if attempt + 1 < self._attempts:
                    # On shutdown the remaining waits are cut short, the tries are not.
                    self._stopping.wait(delay)
                    delay *= 2
            else:
                self.failed += 1
                logger.warning("Budget webhook gave up after %d attempts", self._attempts)
            self._queue.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued alert is delivered or given up; True if the queue emptied."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        self._client.close()


class AlertDispatcher:
    """Where a budget alert goes: an audit event (``budget.alert``), every listener (the
    server counts ``tabpfn_gateway_budget_alerts_total``), and the webhook when configured."""

    def __init__(self, store: Store, webhook: WebhookSender | None = None) -> None:
        self._store = store
        self.webhook = webhook
        self._listeners: list[Callable[[BudgetAlert], None]] = []

    def add_listener(self, listener: Callable[[BudgetAlert], None]) -> None:
        self._listeners.append(listener)

    def fire(self, alert: BudgetAlert) -> None:
        logger.warning(
            "Budget alert: %s %s at %d%% of %d %s (%s)",
            alert.subject_level,
            alert.subject_name,
            alert.threshold,
            alert.budget,
            alert.unit,
            alert.bucket,
        )
        try:
            self._store.record_audit(
                AuditEvent(
                    id=new_id(),
                    actor="gateway",
                    action="budget.alert",
                    target_type="key" if alert.subject_level == "key" else "principal",
                    target_id=alert.subject_id,
                    created_at=utcnow(),
                    details={
                        "threshold": alert.threshold,
                        "bucket": alert.bucket,
                        "spent": alert.spent,
                        "budget": alert.budget,
                        "unit": alert.unit,
                        "mode": alert.mode,
                        "level": alert.subject_level,
                    },
                )
            )
        except Exception:  # an alert must never fail the call that settled
            logger.exception("Could not write the budget alert's audit event")
        for listener in self._listeners:
            try:
                listener(alert)
            except Exception:
                logger.exception("A budget alert listener failed")
        if self.webhook is not None:
            self.webhook.send(alert.as_json())

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
