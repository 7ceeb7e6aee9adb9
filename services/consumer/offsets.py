"""Kafka offsets are committed only past events that are fully handled.

Why we carry this: faust-streaming 0.15.3 commits past an event that is still being handled
once later events of its partition are done. `Consumer._new_offset` checks the gap after the
committed offset off by one (`min(acked) - committed > 1`, where `committed` is already the
next offset to read) and skips the check when nothing was committed yet (a new group, new
partitions). It also counts as done the buffered events it skips during a rebalance. Upstream
issue faust-streaming#606 describes the first two; its fix was still unmerged when we wrote
this. Before dropping this module after an upgrade, check all three, and keep the e2e tests
in tests/e2e/test_consumer_at_least_once.py passing.

So the agent tells an `OffsetLedger` when it takes an event and when the event is done, and
Faust commits, for each partition, the lowest offset taken and not done (or one past the
highest done when nothing is pending). Events of a partition reach the agent in offset order,
so every offset below that position was handled (or is a gap in the log). Events taken but
abandoned at shutdown are never marked done, so their offsets are never committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka
from faust.types import TP, Message


class PartitionProgress:
    """One partition's events taken by the agent since it was assigned to this process."""

    def __init__(self) -> None:
        self._pending: set[int] = set()
        self._done_below: int | None = None

    def taken(self, offset: int) -> None:
        self._pending.add(offset)

    def done(self, offset: int) -> None:
        self._pending.discard(offset)
        if self._done_below is None or offset >= self._done_below:
            self._done_below = offset + 1

    def safe_position(self) -> int | None:
        """The offset to commit: everything below it is done; None when nothing is yet."""
        if self._pending:
            return min(self._pending)
        return self._done_below


class OffsetLedger:
    def __init__(self) -> None:
        self._partitions: dict[TP, PartitionProgress] = {}

    def taken(self, message: Message) -> PartitionProgress:
        """Record that the agent started on `message`; mark it done on the returned progress.

        A partition revoked meanwhile gets a new progress if assigned again, so an event of
        the old assignment that finishes late cannot move the new one's position.
        """
        progress = self._partitions.setdefault(message.tp, PartitionProgress())
        progress.taken(message.offset)
        return progress

    def safe_position(self, tp: TP) -> int | None:
        progress = self._partitions.get(tp)
        return progress.safe_position() if progress else None

    def partitions(self) -> list[TP]:
        return list(self._partitions)

    def forget(self, partitions: Iterable[TP]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)


class LedgerConsumer(aiokafka.Consumer):
    """Faust's aiokafka consumer, committing the ledger's positions instead of its acks."""

    def _new_offset(self, tp: TP) -> int | None:
        # Faust still records acks; they are not used, so they must not pile up.
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        return self._ledger.safe_position(tp)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        return (
            tp
            for tp in self._ledger.partitions()
            if topics is None or tp in topics or tp.topic in topics
        )

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)  # commits what is done, then lets go
        self._ledger.forget(revoked)

    @property
    def _ledger(self) -> OffsetLedger:
        return cast(LedgerApp, self.app).offsets


class LedgerTransport(aiokafka.Transport):
    Consumer = LedgerConsumer


class LedgerApp(faust.App):
    """A Faust app whose consumer commits only what `offsets` says is done."""

    offsets: OffsetLedger

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.offsets = OffsetLedger()
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> LedgerTransport:
        return LedgerTransport(self.conf.broker_consumer, self)
