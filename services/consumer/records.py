"""Kafka records as the consumer sees them, and the dead letters it makes of bad ones."""

from __future__ import annotations

from dataclasses import dataclass

SOURCE_TOPIC = "payment-events"
DEAD_LETTER_TOPIC = "payment-events-dlq"

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
        """The first header of that name, as text ("" when absent)."""
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), "")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The original key, value and headers unchanged, plus where they came from and why."""

    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, record: IncomingRecord, reason: str) -> DeadLetter:
        added = [
            ("dlq.reason", reason.encode()),
            ("dlq.source.topic", record.topic.encode()),
            ("dlq.source.partition", str(record.partition).encode()),
            ("dlq.source.offset", str(record.offset).encode()),
        ]
        return cls(record.key, record.value, [*record.headers, *added])
