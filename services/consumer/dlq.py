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
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.consumer.records import DEAD_LETTER_TOPIC, SOURCE_TOPIC, Headers
from shared.settings import ConfigError, load_settings

# tansu answers end-offset queries wrongly, so "the end" is where the topic goes quiet.
IDLE_END_S = 2.0


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str:
        return next((v.decode(errors="replace") for k, v in self.headers if k == name), "")

    def summary(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "reason": self.header("dlq.reason"),
            "source": f"{self.header('dlq.source.topic')}[{self.header('dlq.source.partition')}]"
            f"@{self.header('dlq.source.offset')}",
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "value": (self.value or b"")[:300].decode(errors="replace"),
        }


async def read_dead_letters(bootstrap: str) -> list[StoredDeadLetter]:
    consumer = AIOKafkaConsumer(
        DEAD_LETTER_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letters: list[StoredDeadLetter] = []
    try:
        while batch := await consumer.getmany(timeout_ms=int(IDLE_END_S * 1000)):
            for records in batch.values():
                letters += [
                    StoredDeadLetter(r.partition, r.offset, r.key, r.value, list(r.headers))
                    for r in records
                ]
    finally:
        await consumer.stop()
    return sorted(letters, key=lambda letter: (letter.partition, letter.offset))


async def replay(bootstrap: str, letters: Sequence[StoredDeadLetter]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for letter in letters:
            headers = [(k, v) for k, v in letter.headers if not k.startswith("dlq.")]
            headers.append(("dlq.replayed-from", f"{DEAD_LETTER_TOPIC}:{letter.ref}".encode()))
            await producer.send_and_wait(
                SOURCE_TOPIC, letter.value, key=letter.key, headers=headers
            )
    finally:
        await producer.stop()


def choose(letters: list[StoredDeadLetter], args: argparse.Namespace) -> list[StoredDeadLetter]:
    chosen = [
        letter
        for letter in letters
        if (args.all or letter.ref in args.ref) and args.reason in letter.header("dlq.reason")
    ]
    missing = set(args.ref) - {letter.ref for letter in letters}
    if missing:
        raise SystemExit(f"dlq: no dead letter at {', '.join(sorted(missing))}")
    return chosen


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    letters = await read_dead_letters(bootstrap)
    if args.command == "list":
        for letter in letters:
            print(json.dumps(letter.summary()))
        return
    chosen = choose(letters, args)
    if not chosen:
        raise SystemExit("dlq: nothing chosen; name records with --ref P:O or use --all")
    await replay(bootstrap, chosen)
    for letter in chosen:
        print(json.dumps({"replayed": letter.ref, "to": SOURCE_TOPIC}))


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
