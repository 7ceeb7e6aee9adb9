"""Kafka records as the consumer sees them, and the dead letters it makes of bad ones."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.record.default_records import DefaultRecordBatchBuilder

SOURCE_TOPIC = "payment-events"
DEAD_LETTER_TOPIC = "payment-events-dlq"
REFUND_SOURCE_TOPIC = "refund-requests"
REFUND_DEAD_LETTER_TOPIC = "refund-requests-dlq"
# Each dead-letter topic and the topic its records came from (and are replayed to).
SOURCES_OF_DEAD_LETTERS = {
    DEAD_LETTER_TOPIC: SOURCE_TOPIC,
    REFUND_DEAD_LETTER_TOPIC: REFUND_SOURCE_TOPIC,
}

REASON = "dlq.reason"
SOURCE_TOPIC_HEADER = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
TRUNCATED = "dlq.truncated"
ORIGINAL_SIZE = "dlq.original-size"
# The headers a dead letter's reader trusts: a producer's headers of these names are dropped,
# so that none can pass for ours.
DEAD_LETTER_HEADERS = frozenset(
    {REASON, SOURCE_TOPIC_HEADER, SOURCE_PARTITION, SOURCE_OFFSET, TRUNCATED, ORIGINAL_SIZE}
)

# Faust's producer refuses records over 1,000,000 bytes (producer_max_request_size), which is
# under Kafka's default message.max.bytes (1 MiB): the largest letter we can send.
MAX_DEAD_LETTER_BYTES = 1_000_000
# Of a value too large to dead-letter whole, the start is kept: enough to see what it was.
TRUNCATED_VALUE_BYTES = 64 * 1024
MAX_REASON_CHARS = 1_000

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class IncomingRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def header(self, name: str) -> str:
        """The last header of that name, as text ("" when absent).

        The last, because a dead letter's own headers come after the producer's.
        """
        values = [v for k, v in self.headers if k == name]
        return values[-1].decode(errors="replace") if values else ""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original key, value and headers unchanged, plus where they came from and why."""

    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, record: IncomingRecord, reason: str) -> DeadLetter:
        kept = [(name, value) for name, value in record.headers if name not in DEAD_LETTER_HEADERS]
        added = [
            (REASON, reason[:MAX_REASON_CHARS].encode(errors="replace")),
            (SOURCE_TOPIC_HEADER, record.topic.encode()),
            (SOURCE_PARTITION, str(record.partition).encode()),
            (SOURCE_OFFSET, str(record.offset).encode()),
        ]
        return cls(record.key, record.value, [*kept, *added])

    @property
    def size(self) -> int:
        """The bytes Kafka counts against its limit for this record."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(self.key, self.value, self.headers)
        return int(size)

    @property
    def truncated(self) -> bool:
        return any(name == TRUNCATED for name, _ in self.headers)

    def within(self, limit: int) -> DeadLetter:
        """This letter, or when it is over `limit` bytes a truncated copy that says so.

        The copy keeps the start of the value; when the key or the producer's headers alone
        are too large, it keeps only the start of the value and our headers.
        """
        if self.size <= limit:
            return self
        value = self.value or b""
        marks = [(TRUNCATED, b"true"), (ORIGINAL_SIZE, str(len(value)).encode())]
        start = value[: min(TRUNCATED_VALUE_BYTES, limit // 2)]
        cut = DeadLetter(self.key, start, [*self.headers, *marks])
        if cut.size <= limit:
            return cut
        ours = [(name, data) for name, data in cut.headers if name in DEAD_LETTER_HEADERS]
        return DeadLetter(None, start[: limit // 4], ours)
