"""`python -m services.consumer.dlq list|replay`: inspect the dead-letter topic and send
chosen records back to `payment-events` once the cause is fixed.

A replayed record keeps its original key, value and headers (the `dlq.*` headers are dropped)
and gains `dlq.replayed-from` naming the dead letter it came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.consumer.records import DEAD_LETTER_TOPIC, SOURCE_TOPIC, IncomingRecord
from shared.settings import ConfigError, load_settings

# tansu answers end-offset queries wrongly, so "the end" is where the topic goes quiet.
IDLE_END_S = 2.0


def ref(letter: IncomingRecord) -> str:
    """How `list` names a dead letter and `replay --ref` picks it: partition:offset."""
    return f"{letter.partition}:{letter.offset}"


def summary(letter: IncomingRecord) -> dict[str, object]:
    source = letter.header("dlq.source.topic")
    return {
        "ref": ref(letter),
        "reason": letter.header("dlq.reason"),
        "source": f"{source}[{letter.header('dlq.source.partition')}]"
        f"@{letter.header('dlq.source.offset')}",
        "key": letter.key.decode(errors="replace") if letter.key is not None else None,
        "value": (letter.value or b"")[:300].decode(errors="replace"),
    }


async def read_dead_letters(bootstrap: str) -> list[IncomingRecord]:
    consumer = AIOKafkaConsumer(
        DEAD_LETTER_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letters: list[IncomingRecord] = []
    try:
        while batch := await consumer.getmany(timeout_ms=int(IDLE_END_S * 1000)):
            for records in batch.values():
                letters += [
                    IncomingRecord(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
                    for r in records
                ]
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


async def replay(bootstrap: str, letters: Sequence[IncomingRecord]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for letter in letters:
            headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq.")]
            headers.append(("dlq.replayed-from", f"{DEAD_LETTER_TOPIC}:{ref(letter)}".encode()))
            await producer.send_and_wait(
                SOURCE_TOPIC, letter.value, key=letter.key, headers=headers
            )
    finally:
        await producer.stop()


def choose(letters: list[IncomingRecord], args: argparse.Namespace) -> list[IncomingRecord]:
    chosen = [
        letter
        for letter in letters
        if (args.all or ref(letter) in args.ref) and args.reason in letter.header("dlq.reason")
    ]
    missing = set(args.ref) - {ref(letter) for letter in letters}
    if missing:
        raise SystemExit(f"dlq: no dead letter at {', '.join(sorted(missing))}")
    return chosen


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    letters = await read_dead_letters(bootstrap)
    if args.command == "list":
        for letter in letters:
            print(json.dumps(summary(letter)))
        return
    chosen = choose(letters, args)
    if not chosen:
        raise SystemExit("dlq: nothing chosen; name records with --ref P:O or use --all")
    await replay(bootstrap, chosen)
    for letter in chosen:
        print(json.dumps({"replayed": ref(letter), "to": SOURCE_TOPIC}))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.consumer.dlq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="print every dead letter as one JSON line")
    replaying = commands.add_parser("replay", help=f"send dead letters back to {SOURCE_TOPIC}")
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
    asyncio.run(run(args, bootstrap))


if __name__ == "__main__":
    main()
