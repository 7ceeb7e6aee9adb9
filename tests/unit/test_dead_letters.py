from __future__ import annotations

from services.consumer.dlq import summary
from services.consumer.records import (
    MAX_DEAD_LETTER_BYTES,
    TRUNCATED_VALUE_BYTES,
    DeadLetter,
    IncomingRecord,
)


def record(
    value: bytes, headers: list[tuple[str, bytes]], key: bytes | None = b"k"
) -> IncomingRecord:
    return IncomingRecord("payment-events", 2, 41, key, value, headers)


def names(letter: DeadLetter) -> list[str]:
    return [name for name, _ in letter.headers]


def test_a_dead_letter_keeps_the_record_and_adds_where_and_why() -> None:
    letter = DeadLetter.of(record(b"bad", [("trace", b"abc")]), "not JSON")
    assert (letter.key, letter.value) == (b"k", b"bad")
    assert letter.headers == [
        ("trace", b"abc"),
        ("dlq.reason", b"not JSON"),
        ("dlq.source.topic", b"payment-events"),
        ("dlq.source.partition", b"2"),
        ("dlq.source.offset", b"41"),
    ]
    assert not letter.truncated and letter.within(MAX_DEAD_LETTER_BYTES) is letter


def test_producer_headers_named_like_ours_are_replaced() -> None:
    spoofed = [
        ("dlq.reason", b"fine"),
        ("dlq.source.offset", b"999"),
        ("dlq.truncated", b"true"),
        ("dlq.original-size", b"1"),
        ("dlq.replayed-from", b"payment-events-dlq:0:3"),
    ]
    letter = DeadLetter.of(record(b"bad", spoofed), "not JSON")
    assert names(letter).count("dlq.reason") == 1 and ("dlq.reason", b"not JSON") in letter.headers
    assert ("dlq.source.offset", b"41") in letter.headers
    assert "dlq.truncated" not in names(letter) and "dlq.original-size" not in names(letter)
    assert ("dlq.replayed-from", b"payment-events-dlq:0:3") in letter.headers
    assert not letter.truncated


def test_a_value_too_large_for_kafka_is_kept_truncated_with_headers_saying_so() -> None:
    value = b"x" * 1_200_000
    letter = DeadLetter.of(record(value, [("trace", b"abc")]), "too big").within(
        MAX_DEAD_LETTER_BYTES
    )
    assert letter.truncated and letter.size <= MAX_DEAD_LETTER_BYTES
    assert letter.value == value[:TRUNCATED_VALUE_BYTES] and letter.key == b"k"
    assert ("dlq.original-size", b"1200000") in letter.headers
    assert ("trace", b"abc") in letter.headers and ("dlq.source.offset", b"41") in letter.headers


def test_a_key_or_headers_too_large_for_kafka_leave_only_ours() -> None:
    huge_headers = [("h", b"y" * 1_100_000)]
    letter = DeadLetter.of(record(b"v", huge_headers, key=b"z" * 10), "bad").within(100_000)
    assert letter.truncated and letter.size <= 100_000
    assert letter.key is None and "h" not in names(letter)
    assert ("dlq.source.offset", b"41") in letter.headers


def test_a_long_reason_is_cut() -> None:
    letter = DeadLetter.of(record(b"v", []), "r" * 50_000)
    assert len(dict(letter.headers)["dlq.reason"]) == 1_000


def test_the_header_read_is_the_last_of_its_name() -> None:
    letter = record(b"v", [("dlq.reason", b"spoofed"), ("dlq.reason", b"ours")])
    assert letter.header("dlq.reason") == "ours" and letter.header("absent") == ""


def test_the_dlq_tool_summary_is_bounded_and_survives_odd_headers() -> None:
    letter = IncomingRecord(
        "payment-events-dlq",
        0,
        5,
        b"k" * 100_000,
        b"\xff" * 100_000,
        [("dlq.truncated", b"true"), ("dlq.original-size", "²".encode()), ("dlq.reason", b"r")],
    )
    shown = summary(letter)
    assert shown["truncated"] is True and shown["originalSize"] is None
    assert len(str(shown["key"])) == 300 and len(str(shown["value"])) <= 300
