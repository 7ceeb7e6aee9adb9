"""`make dlq` and `make replay`: the dead letters of both dead-letter topics of the running
stack, `payment-events-dlq` (ride events, short name `rides`) and `refund-requests-dlq`
(refund requests, `refunds`), through services/consumer/dlq.py.

A letter's ref names its topic: `refunds:0:3` is offset 3 of partition 0 of
refund-requests-dlq. A plain `0:3` is looked for in every topic listed, and refused when both
hold one there."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from services.consumer import dlq
from services.consumer.records import (
    DEAD_LETTER_TOPIC,
    REFUND_DEAD_LETTER_TOPIC,
    SOURCES_OF_DEAD_LETTERS,
    IncomingRecord,
)

SHORT_NAMES = {DEAD_LETTER_TOPIC: "rides", REFUND_DEAD_LETTER_TOPIC: "refunds"}
REF_FORM = (
    "expected P:O (partition:offset) as `make dlq` shows it, after rides: or refunds: to say"
    " which topic, e.g. refunds:0:3"
)

Letters = dict[str, list[IncomingRecord]]


@dataclass(frozen=True, slots=True)
class NamedRef:
    topic: str | None  # None: whichever topic holds it
    position: str  # partition:offset

    def __str__(self) -> str:
        return f"{SHORT_NAMES[self.topic]}:{self.position}" if self.topic else self.position


def topics_named(name: str | None) -> list[str]:
    """The dead-letter topics `name` means: `rides`, `refunds`, a topic's own name, or (None)
    both."""
    if not name:
        return list(SHORT_NAMES)
    for topic, short in SHORT_NAMES.items():
        if name in (topic, short):
            return [topic]
    choices = ", ".join(f"{short} ({topic})" for topic, short in SHORT_NAMES.items())
    raise SystemExit(f"devstack: no dead-letter topic {name!r}: name one of {choices}, or none")


def parse_refs(texts: Sequence[str], topics: Sequence[str]) -> list[NamedRef]:
    """The refs given, each checked for its form and for naming one of `topics`: refused in
    one line before Kafka is asked anything."""
    refs = [_parsed_ref(text) for text in texts]
    for named in refs:
        if named.topic is not None and named.topic not in topics:
            raise SystemExit(f"devstack: ref {named} is in {named.topic}, not in {topics[0]}")
    return refs


def _parsed_ref(text: str) -> NamedRef:
    prefix, _, rest = text.partition(":")
    topics = [topic for topic, short in SHORT_NAMES.items() if prefix in (topic, short)]
    topic, position = (topics[0], rest) if topics else (None, text)
    if not dlq.is_ref(position):
        raise SystemExit(f"devstack: ref {text!r} is malformed: {REF_FORM}")
    return NamedRef(topic, position)


def qualified_ref(topic: str, letter: IncomingRecord) -> str:
    return str(NamedRef(topic, dlq.ref(letter)))


async def read(bootstrap: str, topics: Sequence[str]) -> Letters:
    found = await asyncio.gather(*(dlq.read_dead_letters(bootstrap, topic) for topic in topics))
    return dict(zip(topics, found, strict=True))


def print_letters(letters: Letters) -> None:
    """One JSON line per letter, its ref naming the topic; on stderr, which topics are empty."""
    for topic, found in letters.items():
        for letter in found:
            print(
                json.dumps(
                    {"topic": topic, **dlq.summary(letter), "ref": qualified_ref(topic, letter)}
                )
            )
    empty = [topic for topic, found in letters.items() if not found]
    if empty:
        verb = "is" if len(empty) == 1 else "are"
        print(f"dlq: {' and '.join(empty)} {verb} empty", file=sys.stderr)


def positions_by_topic(refs: Sequence[NamedRef], letters: Letters) -> dict[str, list[str]]:
    """Each topic's refs (partition:offset); a plain ref goes to the one topic that holds it."""
    chosen: dict[str, list[str]] = {topic: [] for topic in letters}
    for named in refs:
        holders = [
            topic
            for topic, found in letters.items()
            if named.topic in (None, topic) and named.position in {dlq.ref(x) for x in found}
        ]
        if not holders:
            where = " or ".join(letters) if named.topic is None else named.topic
            raise SystemExit(f"devstack: no dead letter at {named} in {where}")
        if len(holders) > 1:
            options = " or ".join(f"REF={NamedRef(topic, named.position)}" for topic in holders)
            raise SystemExit(
                f"devstack: {named} is in both {' and '.join(holders)}: say which, {options}"
            )
        chosen[holders[0]].append(named.position)
    return chosen


async def replay(
    bootstrap: str, letters: Letters, refs: Sequence[NamedRef], *, every: bool, reason: str
) -> None:
    """The letters named (or, with `every`, all of them) back to the topics they came from."""
    positions = positions_by_topic(refs, letters)
    chosen = {
        topic: dlq.choose(found, positions[topic], every=every, reason=reason)
        for topic, found in letters.items()
        if every or positions[topic]
    }
    chosen = {topic: replayed for topic, replayed in chosen.items() if replayed}
    if not chosen:
        raise SystemExit(f"devstack: nothing to replay in {' or '.join(letters)}")
    for topic, replayed in chosen.items():
        await dlq.replay(bootstrap, replayed, topic)
        for letter in replayed:
            to = SOURCES_OF_DEAD_LETTERS[topic]
            print(json.dumps({"replayed": qualified_ref(topic, letter), "to": to}))
