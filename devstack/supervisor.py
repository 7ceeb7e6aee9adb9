"""Keeps the local stack's processes up: one that exits is started again after a delay that
doubles with each crash in a row (1 s up to 30 s), and what happened is kept for the table."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from devstack import servers

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 60.0  # up this long: the next crash starts the backoff over
CHECK_EVERY_S = 0.5


@dataclass
class Watched:
    process: servers.ChildProcess
    after_start: Callable[[], Awaitable[None]] | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    last_exit_code: int | None = None
    restart_at: float | None = None
    up_since: float = 0.0

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def down(self) -> bool:
        return self.restart_at is not None

    def describe_crash(self) -> str:
        """`exited with code 1, restarting in 4 s (log: ...)`, for the table and the log."""
        wait = max(0.0, (self.restart_at or 0.0) - time.monotonic())
        return f"{self.how_it_ended()}, restarting in {wait:.0f} s (log: {self.process.log_path})"

    def how_it_ended(self) -> str:
        code = self.last_exit_code
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name} (exit code {code})"
        return f"exited with code {code}"


class Supervisor:
    def __init__(self, watched: list[Watched], report: Callable[[str], None]) -> None:
        self.watched = watched
        self._report = report

    async def run(self) -> None:
        now = time.monotonic()
        for item in self.watched:
            item.up_since = now
        while True:
            await self.check_once()
            await asyncio.sleep(CHECK_EVERY_S)

    async def check_once(self) -> None:
        for item in self.watched:
            if item.restart_at is None:
                self._notice_exit(item)
            elif time.monotonic() >= item.restart_at:
                await self._restart(item)

    def _notice_exit(self, item: Watched) -> None:
        now = time.monotonic()
        if item.process.running:
            if now - item.up_since >= STABLE_AFTER_S:
                item.crashes_in_a_row = 0
            return
        self._schedule(item, item.process.stop())

    def _schedule(self, item: Watched, exit_code: int | None) -> None:
        delay = min(FIRST_DELAY_S * 2**item.crashes_in_a_row, MAX_DELAY_S)
        item.crashes_in_a_row += 1
        item.last_exit_code = exit_code
        item.restart_at = time.monotonic() + delay
        self._report(f"devstack: {item.name} {item.describe_crash()}")

    async def _restart(self, item: Watched) -> None:
        try:
            await asyncio.to_thread(item.process.start, 60.0)
            if item.after_start is not None:
                await item.after_start()
        except Exception as error:
            self._report(f"devstack: {item.name} did not come back: {error}")
            self._schedule(item, item.process.stop())
            return
        item.restart_at = None
        item.restarts += 1
        item.up_since = time.monotonic()
        self._report(f"devstack: {item.name} restarted (restart {item.restarts})")
