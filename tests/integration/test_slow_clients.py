"""Clients that hold connections without finishing a request, against the webhook as a real
process: each is dropped within its bound, and their number is capped (shared/http_serving.py).

Before the bounds, aiohttp's defaults applied: 200 connections that each sent 500,000 bytes of
a declared 524,288 took the webhook from 89 to 273 MiB (its pod's limit is 256 Mi) and held it,
and slow-header connections stayed open indefinitely. Now at most PUBLIC_MOST_CONNECTIONS are
held, each for BODY_TIMEOUT_S at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from devstack import servers
from services.webhook.app import (
    BODY_TIMEOUT_S,
    MAX_BODY_BYTES,
    PUBLIC_MOST_CONNECTIONS,
    WEBHOOK_PATH,
)
from shared.http_serving import IDLE_TIMEOUT_S
from tests.conftest import RunningPart
from tests.e2e.conftest import webhook_process

MIB = 2**20
# Dropped within the bound, with room for a busy 2-core machine.
SLACK_S = 10.0
STALLED_BODIES = PUBLIC_MOST_CONNECTIONS
STALLED_BODY_SENT = 500_000
SLOW_HEADS = 300

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def webhook(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
    unique: str,
) -> AsyncIterator[servers.ChildProcess]:
    process = webhook_process(
        kafka,
        mongo,
        redis_server,
        stripe_simulator,
        logs_dir,
        f"webhook-slow-{unique}",
        LOG_LEVEL="WARNING",
    )
    await asyncio.to_thread(process.start, 60)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


async def test_stalled_bodies_are_dropped_within_the_bound_in_bounded_memory(
    webhook: servers.ChildProcess,
) -> None:
    assert webhook.process is not None
    memory = psutil.Process(webhook.process.pid)
    rss_before = memory.memory_info().rss
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: t=1,v1=00\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    connections = await asyncio.gather(
        *(_connect(webhook.port, head + b"x" * STALLED_BODY_SENT) for _ in range(STALLED_BODIES))
    )
    peak = memory.memory_info().rss
    answers = await _all_closed(connections, BODY_TIMEOUT_S + SLACK_S)
    took = time.monotonic() - started

    grown_mib = (max(peak, memory.memory_info().rss) - rss_before) / MIB
    print(f"{STALLED_BODIES} stalled bodies: dropped in {took:.1f} s, RSS grew {grown_mib:.0f} MiB")
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:3]
    assert grown_mib < 120, "the pod's limit is 256 Mi; the webhook starts near 90 MiB"
    assert webhook.running, webhook.tail()


async def test_request_heads_that_never_end_are_dropped(webhook: servers.ChildProcess) -> None:
    connections = await asyncio.gather(
        *(_connect(webhook.port, b"POST / HTTP/1.1\r\nHost: x\r\n") for _ in range(SLOW_HEADS))
    )
    await _all_closed(connections, IDLE_TIMEOUT_S + SLACK_S)
    assert webhook.running, webhook.tail()


async def test_connections_past_the_most_are_answered_503_and_closed(
    webhook: servers.ChildProcess,
) -> None:
    # The server accepts connections in the order they were made: the last ones are over.
    opened = [await _connect(webhook.port, b"") for _ in range(PUBLIC_MOST_CONNECTIONS + 20)]
    held, over = opened[:PUBLIC_MOST_CONNECTIONS], opened[PUBLIC_MOST_CONNECTIONS:]
    try:
        answers = await _all_closed(over, SLACK_S)
        assert all(answer.startswith(b"HTTP/1.1 503") for answer in answers), answers[:3]
        assert not any(reader.at_eof() for reader, _ in held)
    finally:
        for _, writer in held:
            writer.close()


async def _connect(port: int, sent: bytes) -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    await writer.drain()
    return reader, writer


async def _all_closed(connections: list[Connection], within_s: float) -> list[bytes]:
    """What the server answered on each connection before it closed them all."""

    async def until_closed(reader: asyncio.StreamReader) -> bytes:
        return await reader.read()

    try:
        async with asyncio.timeout(within_s):
            return await asyncio.gather(*(until_closed(reader) for reader, _ in connections))
    except TimeoutError:
        raise AssertionError(f"connections still open after {within_s:.0f} s") from None
    finally:
        for _, writer in connections:
            writer.close()
