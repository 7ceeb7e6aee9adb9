"""The fetcher's guard (services/consumer/fetched_records.py) on batches built as a producer
builds them: what aiokafka's parser cannot read is parsed or refused, record by record."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.consumer import fetcher
from aiokafka.consumer.fetcher import READ_UNCOMMITTED
from aiokafka.record import _crecords, default_records, legacy_records
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.structs import TopicPartition

from services.consumer import fetched_records
from services.consumer.fetched_records import (
    MAX_BATCH_BYTES,
    BatchRefused,
    FetchedRecords,
    GuardedPartitionRecords,
    gunzip_within_bound,
)

PARTITION = TopicPartition("payment-events", 0)
CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY = 0, 1, 2
ATTRIBUTES_AT = 21  # after base offset, length, leader epoch, magic and CRC
PARSERS = [_crecords.default_records, _crecords.legacy_records, default_records, legacy_records]


class UnreadableName(str):
    """A header name that encodes to bytes that are not UTF-8, as a hostile producer sends."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return b"\xc3\x28"


def batch(
    base_offset: int,
    values: list[bytes],
    headers: list[tuple[str, bytes]] | None = None,
    codec: int = CODEC_NONE,
) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(2, codec, 0, -1, -1, -1, 2**30)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1, key=b"k", value=value, headers=headers or [])
    built = builder.build()
    struct.pack_into(">q", built, 0, base_offset)  # the broker sets it
    return bytes(built)


def with_codec(built: bytes, codec: int) -> bytes:
    """The batch claiming another codec (its CRC no longer matches, which is not checked)."""
    changed = bytearray(built)
    changed[ATTRIBUTES_AT + 1] = (changed[ATTRIBUTES_AT + 1] & ~0x07) | codec
    return bytes(changed)


@pytest.fixture(autouse=True)
def guarded() -> Iterator[None]:
    """The guard in this test process for the test only, as in the consumer's."""
    patched = [
        (fetcher, "MemoryRecords"),
        (fetcher, "PartitionRecords"),
        *((parser, "gzip_decode") for parser in PARSERS),
    ]
    saved = [(module, name, getattr(module, name)) for module, name in patched]
    fetched_records.guard_the_fetcher()
    yield
    for module, name, value in saved:
        setattr(module, name, value)


def fetch(fetched: bytes, offset: int = 0) -> tuple[list[Any], int]:
    """The records aiokafka's fetcher hands over from one fetch, and its position after."""
    records = GuardedPartitionRecords(
        PARTITION, FetchedRecords(fetched), None, offset, None, None, False, READ_UNCOMMITTED
    )
    return list(records), records.next_fetch_offset


def test_an_unreadable_header_name_is_escaped_and_no_record_is_lost_or_repeated() -> None:
    fetched = (
        batch(0, [b"a", b"b"])
        + batch(2, [b"c", b"d"], headers=[(UnreadableName("x"), b"kept"), ("trace", b"1")])
        + batch(4, [b"e"])
    )
    records, position = fetch(fetched)

    assert [(r.offset, r.value) for r in records] == list(enumerate([b"a", b"b", b"c", b"d", b"e"]))
    assert records[2].headers == (("\\xc3(", b"kept"), ("trace", b"1"))
    assert position == 5


def test_a_fetch_that_starts_inside_a_batch_hands_over_only_what_follows() -> None:
    fetched = batch(0, [b"a", b"b", b"c"], headers=[(UnreadableName("x"), b"")]) + batch(3, [b"d"])
    records, position = fetch(fetched, offset=1)

    assert [r.offset for r in records] == [1, 2, 3]
    assert position == 4


@pytest.mark.parametrize("codec", [CODEC_SNAPPY, CODEC_GZIP], ids=["no-library", "corrupt"])
def test_a_batch_that_cannot_be_decompressed_is_skipped_and_the_others_handed_over(
    codec: int,
) -> None:
    unreadable = with_codec(batch(2, [b"c", b"d"]), codec)
    records, position = fetch(batch(0, [b"a", b"b"]) + unreadable + batch(4, [b"e"]))

    assert [r.value for r in records] == [b"a", b"b", b"e"]
    assert position == 5


def test_a_batch_that_expands_past_the_bound_is_skipped() -> None:
    bomb = batch(1, [b"0" * (MAX_BATCH_BYTES + 1)], codec=CODEC_GZIP)
    assert len(bomb) < MAX_BATCH_BYTES // 100
    records, position = fetch(batch(0, [b"a"]) + bomb + batch(2, [b"b"]))

    assert [r.value for r in records] == [b"a", b"b"]
    assert position == 3


def test_gzip_within_the_bound_is_decompressed_whole() -> None:
    data = b"payload " * 10_000
    assert gunzip_within_bound(gzip.compress(data)) == data
    assert gunzip_within_bound(gzip.compress(data) + gzip.compress(b"!")) == data + b"!"
    exactly = b"0" * MAX_BATCH_BYTES
    assert gunzip_within_bound(gzip.compress(exactly)) == exactly


def test_gzip_past_the_bound_or_cut_short_is_refused() -> None:
    with pytest.raises(BatchRefused) as too_large:
        gunzip_within_bound(gzip.compress(b"0" * (MAX_BATCH_BYTES + 1)))
    assert too_large.value.reason == "too_large"
    with pytest.raises(BatchRefused) as cut:
        gunzip_within_bound(gzip.compress(b"payload " * 10_000)[:-20])
    assert cut.value.reason == "corrupt"
