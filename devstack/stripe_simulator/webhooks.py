"""Webhook signing and delivery: in the background, in order per session, with retries."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections import deque
from collections.abc import Iterable

import aiohttp

from .state import EventRecord, JSONObject, SimulatorState

log = logging.getLogger(__name__)

# Of each answer, the start is kept with the delivery (for tests that check what was answered).
ANSWER_KEPT_BYTES = 4096

_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
}


def signature_header(payload: bytes, secrets: Iterable[str], timestamp: int) -> str:
    """`t=<ts>,v1=<sig>[,v1=<sig>...]`: one v1 per secret, as during secret rotation."""
    signed = str(timestamp).encode() + b"." + payload
    parts = [f"t={timestamp}"]
    for secret in secrets:
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        parts.append(f"v1={digest}")
    return ",".join(parts)


class WebhookDeliverer:
    """Delivers events; one queue and one worker per session keep a session's events in order
    while a failing or slow session does not hold up the others."""

    def __init__(self, state: SimulatorState, http: aiohttp.ClientSession) -> None:
        self._state = state
        self._http = http
        self._queues: dict[str, deque[EventRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, record: EventRecord) -> None:
        queue = self._queues.get(record.session_id)
        if queue is not None:
            queue.append(record)
            return
        queue = self._queues[record.session_id] = deque([record])
        task = asyncio.create_task(self._drain(record.session_id, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pending(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queues.clear()

    async def _drain(self, key: str, queue: deque[EventRecord]) -> None:
        try:
            while queue:
                await self._deliver(queue[0])
                queue.popleft()
        finally:
            for record in queue:
                if record.delivery.status == "pending":
                    record.delivery.status = "canceled"
            # No await since the loop saw the queue empty, so nothing was added behind it.
            if self._queues.get(key) is queue:
                del self._queues[key]

    async def _deliver(self, record: EventRecord) -> None:
        config = self._state.config
        payload = json.dumps(record.event, indent=2).encode()
        for attempt in range(1, config.webhook_max_attempts + 1):
            if self._state.webhook.url is None:
                record.delivery.status = "no_endpoint"
                return
            result = await self._attempt(record, payload, attempt)
            record.delivery.attempts.append(result)
            if result["ok"]:
                record.delivery.status = "delivered"
                record.event["pending_webhooks"] = 0
                return
            if attempt < config.webhook_max_attempts:
                await asyncio.sleep(self._backoff(attempt))
        record.delivery.status = "failed"
        log.warning("webhook %s %s: gave up", record.event["id"], record.event["type"])

    def _backoff(self, attempt: int) -> float:
        config = self._state.config
        return float(
            min(config.webhook_initial_backoff_s * 2 ** (attempt - 1), config.webhook_max_backoff_s)
        )

    async def _attempt(self, record: EventRecord, payload: bytes, attempt: int) -> JSONObject:
        webhook = self._state.webhook
        assert webhook.url is not None
        timestamp = self._state.now()
        headers = {
            **_HEADERS,
            "Stripe-Signature": signature_header(payload, webhook.secrets, timestamp),
        }
        timeout = aiohttp.ClientTimeout(total=self._state.config.webhook_timeout_s)
        loop = asyncio.get_running_loop()
        started = loop.time()
        status: int | None = None
        answer: str | None = None
        error: str | None = None
        try:
            async with self._http.post(
                webhook.url, data=payload, headers=headers, timeout=timeout
            ) as response:
                status = response.status
                answer = (await response.read())[:ANSWER_KEPT_BYTES].decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        elapsed_ms = round((loop.time() - started) * 1000, 1)
        log.info(
            "webhook %s %s -> %s attempt %d: %s (%.1f ms)",
            record.event["id"], record.event["type"], webhook.url, attempt,
            status if error is None else error, elapsed_ms,
        )  # fmt: skip
        return {
            "attempt": attempt,
            "timestamp": timestamp,
            "url": webhook.url,
            "status": status,
            "answer": answer,
            "error": error,
            "ok": ok,
            "duration_ms": elapsed_ms,
        }
