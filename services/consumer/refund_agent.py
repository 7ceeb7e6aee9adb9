"""Wires the `refund-requests` agent into the consumer's Faust app, beside the ride-event one:
same group, the same offset ledger and bounded shutdown (through `consume`), its own
dead-letter topic."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import faust

from services.consumer.records import (
    REFUND_DEAD_LETTER_TOPIC,
    REFUND_SOURCE_TOPIC,
    DeadLetter,
    IncomingRecord,
)
from services.consumer.refund_handler import RefundRequestHandler
from services.consumer.refunds import RefundIssuer
from shared.refunds import RefundBook
from shared.retry import until_done

if TYPE_CHECKING:
    from services.consumer.app import ConsumerRuntime

Consume = Callable[
    [faust.StreamT[bytes], Callable[[IncomingRecord], Awaitable[object]]], Awaitable[None]
]


def add_refund_agent(
    app: faust.App, runtime: ConsumerRuntime, consume: Consume, concurrency: int
) -> None:
    source = app.topic(REFUND_SOURCE_TOPIC, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(REFUND_DEAD_LETTER_TOPIC, key_serializer="raw", value_serializer="raw")
    book = RefundBook(runtime.store)

    async def send_dead_letter(letter: DeadLetter) -> None:
        sent = await dead_letters.send(
            key=letter.key, value=letter.value, headers=letter.headers, force=True
        )
        await sent  # wait for the broker's ack before the request is acknowledged

    handler = RefundRequestHandler(
        RefundIssuer(book, runtime.gateway), send_dead_letter, runtime.shutdown.stopping
    )

    @app.agent(source, concurrency=concurrency)
    async def refund_payments(stream: faust.StreamT[bytes]) -> None:
        await runtime.store_ready.wait()
        await until_done(book.ensure_indexes, what="creating the refunds index")
        await consume(stream, handler.handle)
