"""Group commit: calls that arrive while a batch is being written go together as the next one.

A lone call is written at once (one loop iteration later); under load, the calls that came in
during one round trip share the next, so a busy process makes a few large requests instead of
many small ones. Up to `max_in_flight` batches are written at a time, so the server is not
left idle while a batch's answer is being read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WRITER_TASK = "group-commit-writer"

WriteBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result]]]
"""Writes the items in one request; returns one result per item, in order."""


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self, write: WriteBatch[Item, Result], *, max_batch: int = 256, max_in_flight: int = 2
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """The item's result once its batch is written; the batch's error if it failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._writers) < self._max_in_flight:
            self._writers.add(asyncio.create_task(self._write_waiting(), name=WRITER_TASK))
        return await future

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write_batch(batch)
        finally:
            # Leave at once: the callers of the last batch resume before this task is done,
            # and a call they make then must start a writer of its own, not wait for this one.
            writer = asyncio.current_task()
            assert writer is not None
            self._writers.discard(writer)

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:  # the process is stopping: so are its callers
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(result)
