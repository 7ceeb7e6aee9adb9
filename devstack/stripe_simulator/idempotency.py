"""Idempotency keys as Stripe keeps them: one saved response per key, one request at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

KEY_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class SavedResponse:
    fingerprint: str
    status: int
    body: bytes
    request_id: str
    saved_at: float


class IdempotencyCache:
    """Saved responses by key, plus a lock per key so concurrent duplicates run one by one."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._saved: dict[str, SavedResponse] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]

    def get(self, key: str) -> SavedResponse | None:
        saved = self._saved.get(key)
        if saved is not None and self._clock() - saved.saved_at > KEY_TTL_S:
            del self._saved[key]
            return None
        return saved

    def save(self, key: str, fingerprint: str, status: int, body: bytes, request_id: str) -> None:
        self._saved[key] = SavedResponse(fingerprint, status, body, request_id, self._clock())

    def saved(self) -> list[tuple[str, SavedResponse]]:
        return list(self._saved.items())

    def save_response(self, key: str, saved: SavedResponse) -> None:
        self._saved[key] = saved

    def clear(self) -> None:
        self._saved.clear()
