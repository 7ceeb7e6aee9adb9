"""`python -m services.consumer.dlq [--topic T] list|replay`: inspect a dead-letter topic
(`payment-events-dlq` by default, or `refund-requests-dlq`) and send chosen records back to the
topic they came from (`payment-events`, `refund-requests`) once the cause is fixed.

A replayed record keeps its original key, value and headers (the `dlq.*` headers are dropped)
and gains `dlq.replayed-from` naming the dead letter it came from. A truncated letter (a record
too large for Kafka, of which only the start was kept) is not the original and is never replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaConnectionError

from services.consumer.records import (
    DEAD_LETTER_TOPIC,
    ORIGINAL_SIZE,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC_HEADER,
    SOURCES_OF_DEAD_LETTERS,
    TRUNCATED,
    IncomingRecord,
)
from shared.settings import ConfigError, load_settings

# tansu answers end-offset queries wrongly, so "the end" is where the topic goes quiet.
IDLE_END_S = 2.0
# How much of a letter's key, value and reason `list` prints.
SHOWN_BYTES = 300
SHOWN_REASON_CHARS = 1_000


def ref(letter: IncomingRecord) -> str:
    """How `list` names a dead letter and `replay --ref` picks it: partition:offset."""
    return f"{letter.partition}:{letter.offset}"


def is_truncated(letter: IncomingRecord) -> bool:
    return letter.header(TRUNCATED) == "true"


def summary(letter: IncomingRecord) -> dict[str, object]:
    original_size = letter.header(ORIGINAL_SIZE)
    return {
        "ref": ref(letter),
        "reason": letter.header(REASON)[:SHOWN_REASON_CHARS],
        "source": f"{letter.header(SOURCE_TOPIC_HEADER)}[{letter.header(SOURCE_PARTITION)}]"
        f"@{letter.header(SOURCE_OFFSET)}",
        "truncated": is_truncated(letter),
        "originalSize": int(original_size) if _is_count(original_size) else None,
        "key": _shown(letter.key) if letter.key is not None else None,
        "value": _shown(letter.value or b""),
    }


def _is_count(text: str) -> bool:
    """Digits only, ASCII ones (str.isdigit also takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit()


def _shown(data: bytes) -> str:
    return data[:SHOWN_BYTES].decode(errors="replace")


async def read_dead_letters(bootstrap: str, topic: str = DEAD_LETTER_TOPIC) -> list[IncomingRecord]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    letters: list[IncomingRecord] = []
    try:
        await consumer.start()
        while batch := await consumer.getmany(timeout_ms=int(IDLE_END_S * 1000)):
            for records in batch.values():
                letters += [as_letter(record) for record in records]
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


def as_letter(record: ConsumerRecord[bytes, bytes]) -> IncomingRecord:
    headers = [(name, value or b"") for name, value in record.headers]
    return IncomingRecord(
        record.topic, record.partition, record.offset, record.key, record.value, headers
    )


async def replay(
    bootstrap: str, letters: Sequence[IncomingRecord], topic: str = DEAD_LETTER_TOPIC
) -> None:
    """Each letter of dead-letter `topic` back to the topic it came from."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
        for letter in letters:
            headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq.")]
            headers.append(("dlq.replayed-from", f"{topic}:{ref(letter)}".encode()))
            await producer.send_and_wait(
                SOURCES_OF_DEAD_LETTERS[topic], letter.value, key=letter.key, headers=headers
            )
    finally:
        await producer.stop()


def is_ref(text: str) -> bool:
    """Whether `text` has the form of a ref: partition:offset, two counts."""
    partition, colon, offset = text.partition(":")
    return bool(colon) and _is_count(partition) and _is_count(offset)


def check_refs(refs: Sequence[str]) -> None:
    """Refuse, in one line, a ref that is not of the form P:O."""
    malformed = [text for text in refs if not is_ref(text)]
    if malformed:
        raise SystemExit(
            f"dlq: {malformed[0]!r} is not a dead letter's ref: expected P:O (a partition and"
            " an offset, as `list` shows them, e.g. 0:3)"
        )


def choose(
    letters: list[IncomingRecord], refs: Sequence[str], *, every: bool, reason: str
) -> list[IncomingRecord]:
    """The letters named by `refs` (all of them, or refuse) or, with `every`, all of them;
    either way only those whose reason contains `reason` (truncated ones skipped, with a line
    on stderr each)."""
    check_refs(refs)
    missing = set(refs) - {ref(letter) for letter in letters}
    if missing:
        raise SystemExit(f"dlq: no dead letter at {', '.join(sorted(missing))}")
    chosen = [
        letter
        for letter in letters
        if (every or ref(letter) in refs) and reason in letter.header(REASON)
    ]
    named_truncated = [
        ref(letter) for letter in chosen if is_truncated(letter) and ref(letter) in refs
    ]
    if named_truncated:
        raise SystemExit(
            f"dlq: {', '.join(named_truncated)} truncated (only the start of a record too large"
            " for Kafka was kept): not the original, so it cannot be replayed"
        )
    for letter in chosen:
        if is_truncated(letter):
            print(f"dlq: skipping {ref(letter)}: truncated, not the original", file=sys.stderr)
    return [letter for letter in chosen if not is_truncated(letter)]


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    check_refs(args.ref if args.command == "replay" else [])
    letters = await read_dead_letters(bootstrap, args.topic)
    if args.command == "list":
        for letter in letters:
            print(json.dumps(summary(letter)))
        if not letters:
            print(f"dlq: {args.topic} is empty", file=sys.stderr)
        return
    chosen = choose(letters, args.ref, every=args.all, reason=args.reason)
    if not chosen:
        raise SystemExit("dlq: nothing to replay; name records with --ref P:O or use --all")
    await replay(bootstrap, chosen, args.topic)
    for letter in chosen:
        print(json.dumps({"replayed": ref(letter), "to": SOURCES_OF_DEAD_LETTERS[args.topic]}))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.consumer.dlq", description=__doc__)
    parser.add_argument(
        "--topic",
        choices=sorted(SOURCES_OF_DEAD_LETTERS),
        default=DEAD_LETTER_TOPIC,
        help="the dead-letter topic (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every dead letter as one JSON line")
    replaying = commands.add_parser("replay", help="send dead letters back where they came from")
    replaying.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="P:O",
        help="a dead letter's partition:offset (as `list` shows); repeatable",
    )
    replaying.add_argument("--all", action="store_true", help="every dead letter")
    replaying.add_argument("--reason", default="", help="only those whose reason contains this")
    args = parser.parse_args(argv)
    try:
        bootstrap = load_settings().kafka_bootstrap_servers
    except ConfigError as error:
        sys.exit(f"dlq: {error}")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the hint below says it all
    try:
        asyncio.run(run(args, bootstrap))
    except KafkaConnectionError:
        sys.exit(
            f"dlq: cannot reach Kafka at {bootstrap}; is it running? Set KAFKA_BOOTSTRAP_SERVERS"
            " (with `make run`: `make dlq`)"
        )


if __name__ == "__main__":
    main()
