from __future__ import annotations

from faust.types import TP

from services.consumer.offsets import OffsetLedger, PartitionProgress

PARTITION = TP("payment-events", 0)


class _Message:
    def __init__(self, offset: int, tp: TP = PARTITION) -> None:
        self.tp = tp
        self.offset = offset


def test_before_any_event_is_done_the_position_is_the_first_one_taken() -> None:
    progress = PartitionProgress()
    assert progress.safe_position() is None
    progress.taken(7)
    progress.taken(8)
    progress.done(8)
    assert progress.safe_position() == 7


def test_the_position_stops_at_the_lowest_event_not_done_whatever_the_order() -> None:
    progress = PartitionProgress()
    for offset in range(10, 20):
        progress.taken(offset)
    for offset in (19, 11, 12, 10, 18):
        progress.done(offset)
    assert progress.safe_position() == 13
    for offset in (13, 14, 16, 17):
        progress.done(offset)
    assert progress.safe_position() == 15
    progress.done(15)
    assert progress.safe_position() == 20


def test_a_revoked_partition_starts_over_and_late_finishers_of_the_old_one_count_nowhere() -> None:
    ledger = OffsetLedger()
    old = ledger.taken(_Message(50))  # type: ignore[arg-type]
    ledger.forget([PARTITION])
    ledger.taken(_Message(10))  # type: ignore[arg-type]
    old.done(50)
    assert ledger.safe_position(PARTITION) == 10
    assert ledger.safe_position(TP("payment-events", 1)) is None
