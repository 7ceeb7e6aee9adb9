"""Every batch the broker hands over is parsed or refused, and no batch stops the fetcher.

Why we carry this: aiokafka 0.14 parses fetched batches inside its fetcher task, where an
error is no record's: it crashes the fetcher, the worker with it, and after every restart the
worker reads the same batch and dies again, both agents with it. Three such batches come from
outside, all before any of our handling:

- a header name that is not UTF-8 (the protocol says names are UTF-8; brokers do not check):
  aiokafka decodes it strictly and raises `UnicodeDecodeError`;
- a compressed batch that expands without limit (250 KB of gzip made 250 MB), all held in
  memory at once: the pod is OOM-killed on the same batch again and again;
- a codec this process cannot decompress (snappy, lz4 and zstd need a library we do not ship)
  or compressed data that is corrupt.

So the fetcher is given, for each partition it fetched, records that remember the fetched
bytes, and gzip is decompressed within `MAX_BATCH_BYTES`. When aiokafka's parser fails on any
of the above, the rest of the fetch is parsed here in Python: header names that are not UTF-8
are kept with each invalid byte as a `\\xNN` escape (which Kafka can carry, so the record goes
on to its agent, to be handled or dead-lettered with its headers), and a batch that cannot be
decompressed within the bound is refused: counted, logged with its offsets (its records stay
in the topic until its retention ends), and skipped. Kafka 3 and later store only batches of
the v2 format, which this covers; older formats are left to aiokafka.

Before dropping this module after an upgrade, check that aiokafka survives each case: the
e2e tests in tests/e2e/test_consumer_hostile.py produce all three.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any

from aiokafka.consumer import fetcher
from aiokafka.errors import UnsupportedCodecError
from aiokafka.record import _crecords, default_records, legacy_records
from aiokafka.record.default_records import _DefaultRecordBatchPy, _DefaultRecordPy
from aiokafka.record.legacy_records import LegacyRecordBatch
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint
from prometheus_client import Counter

logger = logging.getLogger(__name__)

UNREADABLE_HEADER_NAMES = Counter(
    "payments_consumer_unreadable_header_names_total",
    "Header names of fetched records that are not UTF-8 (kept with \\x escapes)",
)
REFUSED_BATCHES = Counter(
    "payments_consumer_refused_batches_total",
    "Fetched batches skipped: too large once decompressed, or not decompressible here",
    ["reason"],
)

# The most a batch may hold once decompressed: a batch is at most what one fetch brings
# (1 MiB by default), and JSON events compress about tenfold.
MAX_BATCH_BYTES = 32 * 1024 * 1024
GUNZIP_STEP_BYTES = 1024 * 1024
# A batch starts with its base offset (int64) and its length after that field (int32).
BATCH_LENGTH = struct.Struct(">qi")
MAGIC_AT = 16
# The base offset, and (in the v2 format) the last record's offset from it.
BASE_AND_LAST_DELTA = struct.Struct(">q15xi")


class BatchRefused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# What aiokafka's parser may raise on a batch from outside; the Python parse handles each.
UNPARSABLE = (UnicodeDecodeError, BatchRefused, UnsupportedCodecError, zlib.error, EOFError)


def guard_the_fetcher() -> None:
    """Makes aiokafka's fetcher, in this process, parse or refuse every batch it fetches."""
    fetcher.MemoryRecords = FetchedRecords
    fetcher.PartitionRecords = GuardedPartitionRecords
    for parser in (_crecords.default_records, _crecords.legacy_records):
        parser.gzip_decode = gunzip_within_bound
    for parser in (default_records, legacy_records):
        parser.gzip_decode = gunzip_within_bound


def gunzip_within_bound(data: bytes | memoryview) -> bytes:
    """gzip data (one or more members) decompressed, or BatchRefused past MAX_BATCH_BYTES.

    A step at a time, so that no more than the bound and one step is ever held."""
    out = bytearray()
    rest = bytes(data)
    while rest:
        inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        while rest and not inflater.eof:
            out += inflater.decompress(rest, GUNZIP_STEP_BYTES)
            if len(out) > MAX_BATCH_BYTES:
                raise BatchRefused("too_large", f"expands past {MAX_BATCH_BYTES} bytes")
            rest = inflater.unconsumed_tail
        if not inflater.eof:
            raise BatchRefused("corrupt", "the gzip data ends early")
        rest = inflater.unused_data
    return bytes(out)


class FetchedRecords:
    """aiokafka's parser over one partition's fetched bytes, which it keeps for a second try."""

    def __init__(self, fetched: bytes) -> None:
        self.fetched = fetched
        self._parsed = MemoryRecords(fetched)

    def size_in_bytes(self) -> int:
        return int(self._parsed.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._parsed.has_next())

    def next_batch(self) -> Any:
        return self._parsed.next_batch()


class GuardedPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    _records: Any
    _tp: Any

    def _unpack_records(self) -> Iterator[Any]:
        fetched: FetchedRecords = self._records
        try:
            yield from super()._unpack_records()
            return
        except UNPARSABLE:
            pass  # out of the handler first: its traceback holds what the failed pass decoded
        # Records already handed over moved next_fetch_offset past them: the second pass
        # skips them, as aiokafka skips the start of a batch fetched from its middle.
        self._records = PythonParsedRecords(fetched.fetched, self._tp, self.next_fetch_offset)
        yield from super()._unpack_records()


class PythonParsedRecords:
    """The batches of one fetch, parsed in Python: lenient header names, refusable batches."""

    def __init__(self, fetched: bytes, partition: Any, start: int) -> None:
        """Only the batches with records at `start` or after: aiokafka's pass over the others
        would move its position back to their end."""
        batches = _batches(memoryview(fetched))
        self._batches = deque(
            batch for batch in batches if batch[MAGIC_AT] < 2 or _next_offset(batch) > start
        )
        self._partition = partition

    def has_next(self) -> bool:
        return bool(self._batches)

    def next_batch(self) -> Any:
        batch = self._batches.popleft()
        magic = batch[MAGIC_AT]
        if magic < 2:
            return LegacyRecordBatch(batch, magic)
        return GuardedBatch(batch, self._partition)


def _batches(fetched: memoryview) -> Iterator[memoryview]:
    """Each whole batch; a fetch may end inside one, which the next fetch brings whole."""
    position = 0
    while len(fetched) - position >= BATCH_LENGTH.size:
        _, length = BATCH_LENGTH.unpack_from(fetched, position)
        end = position + BATCH_LENGTH.size + length
        if end > len(fetched):
            return
        yield fetched[position:end]
        position = end


def _next_offset(batch: memoryview) -> int:
    """The offset after a v2 batch's last record."""
    base_offset, last_offset_delta = BASE_AND_LAST_DELTA.unpack_from(batch, 0)
    return int(base_offset + last_offset_delta + 1)


class GuardedBatch(_DefaultRecordBatchPy):  # type: ignore[misc]
    """aiokafka's Python batch (header, checks) that refuses what it cannot decompress within
    the bound, and reads header names leniently."""

    _buffer: bytearray
    _pos: int
    _num_records: int

    def __init__(self, batch: memoryview, partition: Any) -> None:
        super().__init__(batch)
        self._partition = partition

    def __iter__(self) -> GuardedBatch:
        try:
            self._maybe_uncompress()
        except UNPARSABLE as error:
            self._refuse(error)
        return self

    def _refuse(self, error: Exception) -> None:
        reason = error.reason if isinstance(error, BatchRefused) else "not_decompressible"
        REFUSED_BATCHES.labels(reason).inc()
        logger.error(
            "a fetched batch was refused and skipped; its records stay in the topic",
            extra={
                "source": f"{self._partition.topic}[{self._partition.partition}]",
                "offsets": f"{self.base_offset}-{self.next_offset - 1}",
                "reason": f"{type(error).__name__}: {error}"[:500],
            },
        )
        self._buffer, self._pos, self._num_records = bytearray(), 0, 0

    def _read_msg(self, decode_varint: Any = decode_varint) -> Any:
        # A record: length, attributes (one byte), timestamp delta, offset delta, key, value,
        # headers (name, value); every number a varint, every length -1 for null.
        buffer, position = self._buffer, self._pos
        length, position = decode_varint(buffer, position)
        end = position + length
        position += 1
        timestamp_delta, position = decode_varint(buffer, position)
        offset_delta, position = decode_varint(buffer, position)
        key, position = _bytes_at(buffer, position)
        value, position = _bytes_at(buffer, position)
        count, position = decode_varint(buffer, position)
        offset = self.base_offset + offset_delta
        headers = []
        for _ in range(count):
            name, position = _bytes_at(buffer, position)
            header_value, position = _bytes_at(buffer, position)
            headers.append((self._header_name(name or b"", offset), header_value))
        if position != end:
            raise ValueError(f"record at offset {offset} is {end - position} bytes off")
        self._pos = position
        timestamp = (
            self.max_timestamp
            if self.timestamp_type == self.LOG_APPEND_TIME
            else self.first_timestamp + timestamp_delta
        )
        return _DefaultRecordPy(offset, timestamp, self.timestamp_type, key, value, headers)

    def _header_name(self, name: bytes, offset: int) -> str:
        try:
            return name.decode()
        except UnicodeDecodeError:
            escaped = name.decode(errors="backslashreplace")
            UNREADABLE_HEADER_NAMES.inc()
            logger.warning(
                "a record's header name is not UTF-8: kept with \\x escapes",
                extra={
                    "source": f"{self._partition.topic}[{self._partition.partition}]@{offset}",
                    "header": escaped[:200],
                },
            )
            return escaped


def _bytes_at(buffer: bytearray, position: int) -> tuple[bytes | None, int]:
    """A length-prefixed field (None for length -1) and the position after it."""
    length, position = decode_varint(buffer, position)
    if length < 0:
        return None, position
    end = position + length
    if end > len(buffer):
        raise ValueError("a field runs past the end of its batch")
    return bytes(buffer[position:end]), end
