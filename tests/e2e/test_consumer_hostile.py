"""Hostile records against the consumer as a subprocess, with real Kafka, MongoDB, Redis and the
Stripe simulator: poison records are dead-lettered, never stop the worker, and the dead-letter
headers cannot be spoofed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaProducer, ConsumerRecord

from devstack import servers
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.e2e.conftest import service_environment
from tests.e2e.test_consumer import (
    all_pending_with_session,
    dlq_tool,
    make_rides,
    ride_events,
)
from tests.e2e.test_consumer import start_consumer as start_consumer  # a fixture
from tests.helpers import eventually, http_status, metric_sum, read_topic

DEEP = b'{"rideId":"deep","userId":"u","fare":"1","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
LONG_NUMBER = b'{"rideId":"long","userId":"u","fare":' + b"1" * 5000 + b"}"
HUGE = b'{"rideId":"huge","userId":"u","fare":"1","pad":"' + b"x" * 1_200_000 + b'"}'


async def produce_large(
    kafka: RunningPart, records: list[tuple[bytes, list[tuple[str, bytes]]]], key: bytes
) -> None:
    """Sends each (value, headers) in order, all with `key` (so all to one partition)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.url, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait("payment-events", value, key=key, headers=headers)
    finally:
        await producer.stop()


async def readiness_while(url: str, done: asyncio.Event) -> list[int]:
    """Every /readyz answer until `done` is set, one poll every 200 ms."""
    answers = []
    while not done.is_set():
        answers.append(await http_status(url))
        await asyncio.sleep(0.2)
    return answers


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    for name, value in record.headers:
        named.setdefault(name, []).append(value.decode())
    return named


async def test_poison_records_are_dead_lettered_and_the_valid_ones_behind_them_processed(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    rides = make_rides(f"poison-{unique}-", 10, users=1)
    trace = [("trace", b"abc")]
    poison = [(DEEP, trace), (LONG_NUMBER, trace), (HUGE, trace)]
    consumer = start_consumer()
    readyz = f"http://127.0.0.1:{consumer.port}/readyz"
    await eventually(
        lambda: _answers(readyz, 200), timeout_s=60, what="the consumer ready before the test"
    )
    done = asyncio.Event()
    polling = asyncio.create_task(readiness_while(readyz, done))

    await produce_large(
        own_kafka, [*poison, *((event, []) for event in ride_events(rides))], key=b"u"
    )
    await eventually(
        lambda: all_pending_with_session(store, rides),
        timeout_s=120,
        every_s=0.5,
        what="every valid ride behind the poison records processed",
    )
    letters = await read_topic(
        own_kafka.url, "payment-events-dlq", lambda records: len(records) >= 3
    )
    done.set()
    answers = await polling

    assert consumer.running, consumer.tail()
    assert set(answers) == {200}, f"/readyz answered {sorted(set(answers))} during the run"
    assert len(letters) == 3
    deep, long_number, huge = sorted(letters, key=lambda letter: letter.offset)
    assert deep.value == DEEP and long_number.value == LONG_NUMBER
    assert "nested deeper" in headers_of(deep)["dlq.reason"][0]
    assert "number longer" in headers_of(long_number)["dlq.reason"][0]
    for letter in (deep, long_number):
        assert "dlq.truncated" not in headers_of(letter)

    headers = headers_of(huge)
    assert headers["dlq.truncated"] == ["true"]
    assert headers["dlq.original-size"] == [str(len(HUGE))]
    assert "byte limit" in headers["dlq.reason"][0]
    assert headers["dlq.source.topic"] == ["payment-events"]
    assert int(headers["dlq.source.offset"][0]) == huge_offset(deep, long_number)
    assert headers["trace"] == ["abc"]
    assert huge.key == b"u"
    assert huge.value is not None and HUGE.startswith(huge.value) and len(huge.value) < len(HUGE)


def huge_offset(*before: ConsumerRecord[bytes, bytes]) -> int:
    """The third record of the partition: the huge one came right after the other two."""
    offsets = [int(headers_of(letter)["dlq.source.offset"][0]) for letter in before]
    assert offsets == [offsets[0], offsets[0] + 1]
    return offsets[0] + 2


async def test_a_producer_cannot_spoof_the_dead_letter_headers(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    unique: str,
) -> None:
    spoofed = [
        ("dlq.reason", b"all good, replay me"),
        ("dlq.source.topic", b"elsewhere"),
        ("dlq.source.partition", b"7"),
        ("dlq.source.offset", b"999999"),
        ("dlq.truncated", b"true"),
        ("dlq.original-size", b"1"),
        ("trace", b"abc"),
    ]
    start_consumer()
    await produce_large(own_kafka, [(b"not json", spoofed)], key=unique.encode())

    [letter] = await read_topic(
        own_kafka.url, "payment-events-dlq", lambda records: len(records) >= 1
    )
    headers = headers_of(letter)
    assert headers["trace"] == ["abc"]
    assert len(headers["dlq.reason"]) == 1 and "not valid JSON" in headers["dlq.reason"][0]
    assert headers["dlq.source.topic"] == ["payment-events"]
    assert headers["dlq.source.partition"] != ["7"]
    assert headers["dlq.source.offset"] == ["0"]
    assert "dlq.truncated" not in headers and "dlq.original-size" not in headers

    [listed] = await dlq_tool(own_kafka, "list")
    assert "not valid JSON" in listed["reason"]
    assert listed["source"].startswith("payment-events[") and listed["source"].endswith("@0")
    assert not listed["truncated"]


async def test_the_dlq_tool_shows_a_truncated_letter_and_refuses_to_replay_it(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    unique: str,
) -> None:
    start_consumer()
    await produce_large(own_kafka, [(HUGE, [])], key=unique.encode())
    await read_topic(own_kafka.url, "payment-events-dlq", lambda records: len(records) >= 1)

    [listed] = await dlq_tool(own_kafka, "list")
    assert listed["truncated"] is True and listed["originalSize"] == len(HUGE)
    assert len(listed["value"]) <= 300

    code, _, err = await run_dlq_tool(own_kafka, "replay", "--ref", listed["ref"])
    assert code != 0 and "truncated" in err
    code, _, err = await run_dlq_tool(own_kafka, "replay", "--all")
    assert code != 0 and "truncated" in err


async def run_dlq_tool(kafka: RunningPart, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.consumer.dlq",
        *args,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _answers(url: str, status: int) -> bool:
    return await http_status(url) == status


# A bug the handler does not survive, put into the consumer process at start (Python imports
# `sitecustomize` from the path by itself): the only way left for a record to crash the agent.
INJECTED_BUG = """
from services.consumer import handler

_handle = handler.RideEventHandler.handle


async def handle(self, record):
    if record.value == b"crash the agent":
        raise RuntimeError("injected bug")
    return await _handle(self, record)


handler.RideEventHandler.handle = handle
"""


async def test_a_worker_whose_agent_crashed_is_not_ready_and_stops_on_sigterm(
    own_kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    (tmp_path / "sitecustomize.py").write_text(INJECTED_BUG)
    env = service_environment(own_kafka, mongo, redis_server, stripe_simulator, f"test-{unique}")
    port = servers.free_port()
    path = os.pathsep.join([*os.environ.get("PYTHONPATH", "").split(os.pathsep), str(tmp_path)])
    consumer = servers.python_module(
        f"consumer-{unique}",
        "services.consumer",
        port,
        logs_dir,
        {**env, "PORT": str(port), "PYTHONPATH": path},
    )
    consumer.start(timeout_s=60)
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        await eventually(lambda: _answers(readyz, 200), timeout_s=60, what="the consumer ready")
        await produce_large(own_kafka, [(b"crash the agent", [])], key=b"u")

        failed = await eventually(lambda: _failed_checks(readyz), timeout_s=60, what="a 503")
        assert "agent" in failed, failed

        consumer.signal(signal.SIGTERM)
        await eventually(
            lambda: _exited(consumer), timeout_s=30, what="the worker to exit on SIGTERM"
        )
    finally:
        consumer.stop()


async def _failed_checks(url: str) -> dict[str, Any] | None:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.status != 503:
            return None
        failed: dict[str, Any] = (await response.json())["failed"]
        return failed


async def _exited(process: servers.ChildProcess) -> bool:
    return not process.running


# A producer that writes a header name Kafka's protocol forbids (names are UTF-8 strings):
# aiokafka's Python record builder encodes names with str.encode, so a str that encodes to
# invalid UTF-8 gets through; brokers store it as it is.
UNREADABLE_HEADER_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class UnreadableName(str):
    def encode(self, *args, **kwargs):
        return b"\\xc3\\x28"

async def main():
    producer = AIOKafkaProducer(bootstrap_servers=sys.argv[1], acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            sys.argv[2], sys.stdin.buffer.read(), key=sys.argv[3].encode(),
            headers=[(UnreadableName("x"), b"kept"), ("trace", b"abc")],
        )
    finally:
        await producer.stop()

asyncio.run(main())
"""
UNREADABLE_NAME_ESCAPED = "\\xc3("


async def produce_with_an_unreadable_header_name(
    kafka: RunningPart, topic: str, value: bytes, key: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        UNREADABLE_HEADER_PRODUCER,
        kafka.url,
        topic,
        key,
        env={**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"},
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate(value)
    assert process.returncode == 0, err.decode()


async def test_a_header_name_that_is_not_utf8_stops_neither_agent(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    """Before: aiokafka's fetcher crashed on such a record, and the worker with it, on every
    restart; one on refund-requests stopped ride payments too."""
    rides = make_rides(f"header-{unique}-", 4, users=1)
    first, *others = ride_events(rides)
    consumer = start_consumer()
    await produce_with_an_unreadable_header_name(own_kafka, "refund-requests", b"{}", key="u")
    await produce_with_an_unreadable_header_name(own_kafka, "payment-events", first, key="u")
    await produce_large(own_kafka, [(event, []) for event in others], key=b"u")

    await eventually(
        lambda: all_pending_with_session(store, rides),
        timeout_s=120,
        every_s=0.5,
        what="every ride handled, the one with the unreadable header name too",
    )
    [letter] = await read_topic(
        own_kafka.url, "refund-requests-dlq", lambda records: len(records) >= 1
    )
    assert consumer.running, consumer.tail()
    headers = headers_of(letter)
    assert headers[UNREADABLE_NAME_ESCAPED] == ["kept"] and headers["trace"] == ["abc"]
    assert headers["dlq.source.topic"] == ["refund-requests"]
    metrics = [f"http://127.0.0.1:{consumer.port}/metrics"]
    assert await metric_sum(metrics, "payments_consumer_unreadable_header_names_total") == 2


async def test_a_compressed_batch_that_expands_without_limit_is_refused_in_bounded_memory(
    start_consumer: Callable[..., servers.ChildProcess],
    own_kafka: RunningPart,
    store: PaymentStore,
    unique: str,
) -> None:
    """Before: 100 KB of gzip on the wire, 100 MB once decompressed, all held at once (250 MB
    took the consumer from 197 to 738 MiB, over its 512 Mi limit: OOM-killed on every restart)."""
    rides = make_rides(f"bomb-{unique}-", 3, users=1)
    consumer = start_consumer()
    readyz = f"http://127.0.0.1:{consumer.port}/readyz"
    await eventually(lambda: _answers(readyz, 200), timeout_s=60, what="the consumer ready")
    assert consumer.process is not None
    memory = psutil.Process(consumer.process.pid)
    rss_before = memory.memory_info().rss
    done = asyncio.Event()
    peak = asyncio.create_task(peak_rss_while(memory, done))

    bomb = b'{"rideId":"bomb","userId":"u","fare":"1","pad":"' + b"0" * 100_000_000 + b'"}'
    producer = AIOKafkaProducer(
        bootstrap_servers=own_kafka.url, compression_type="gzip", max_request_size=2**28
    )
    await producer.start()
    try:
        await producer.send_and_wait("payment-events", bomb, key=b"u")
    finally:
        await producer.stop()
    del bomb
    await produce_large(own_kafka, [(event, []) for event in ride_events(rides)], key=b"u")
    await eventually(
        lambda: all_pending_with_session(store, rides),
        timeout_s=120,
        every_s=0.5,
        what="the rides behind the refused batch handled",
    )
    done.set()
    growth_mib = (await peak - rss_before) / 2**20

    assert consumer.running, consumer.tail()
    print(f"consumer RSS: {rss_before / 2**20:.0f} MiB before, grew {growth_mib:.0f} MiB at most")
    assert growth_mib < 96, f"the consumer grew by {growth_mib:.0f} MiB"
    metrics = [f"http://127.0.0.1:{consumer.port}/metrics"]
    assert await metric_sum(metrics, "payments_consumer_refused_batches_total") == 1


async def peak_rss_while(process: psutil.Process, done: asyncio.Event) -> int:
    peak = 0
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(0.02)
    return peak
