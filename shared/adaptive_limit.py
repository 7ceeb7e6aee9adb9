"""How many calls may be in flight to a server that refuses when busy: AIMD, as TCP does.

Each refusal for load halves the limit (at most once per `cooldown_s`, so one burst of
refusals counts once); each success adds `1 / limit`, about one more call per round trip of
the whole window. The limit never goes below one nor above its maximum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Gauge

IN_FLIGHT_LIMIT = Gauge(
    "payments_stripe_in_flight_limit", "Stripe calls this process may have in flight now"
)


class AdaptiveLimit:
    def __init__(self, maximum: int, *, cooldown_s: float = 1.0) -> None:
        self._maximum = float(maximum)
        self._limit = float(maximum)
        self._cooldown_s = cooldown_s
        self._last_cut = float("-inf")
        self._in_flight = 0
        self._changed = asyncio.Condition()
        IN_FLIGHT_LIMIT.set(maximum)

    @property
    def limit(self) -> int:
        return int(self._limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def refused(self) -> None:
        now = time.monotonic()
        if now - self._last_cut < self._cooldown_s:
            return
        self._last_cut = now
        self._set(max(1.0, self._limit / 2))

    def succeeded(self) -> None:
        if self._limit < self._maximum:
            self._set(min(self._maximum, self._limit + 1 / self._limit))

    def _set(self, limit: float) -> None:
        self._limit = limit
        IN_FLIGHT_LIMIT.set(self.limit)
