"""Small test helpers: waiting for conditions (never for fixed times), reading topics and
sockets, sample messages."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from shared import messages
from shared.messages import Message
from tests.contracts import check_socket_message, check_topic_record

T = TypeVar("T")


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """`app` on a free port of 127.0.0.1, in this process: its runner (to clean up) and URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout_s: float = 30.0,
    every_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(every_s)


async def next_message(
    socket: aiohttp.ClientWebSocketResponse, timeout_s: float = 30.0
) -> dict[str, Any]:
    frame = await socket.receive(timeout=timeout_s)
    assert frame.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {frame.type}"
    message: dict[str, Any] = json.loads(frame.data)
    check_socket_message(message)
    return message


async def http_status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return 0


class NotEnoughRecords(AssertionError):
    """`read_topic` gave up; `records` are those it read."""

    def __init__(
        self, topic: str, records: list[ConsumerRecord[bytes, bytes]], timeout_s: float
    ) -> None:
        super().__init__(f"{topic}: not enough in {timeout_s} s ({len(records)} records read)")
        self.records = records


async def metric_sum(metrics_urls: list[str], name: str) -> float:
    """The sum of every sample of `name` (all its labels) over the processes."""
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for url in metrics_urls:
            async with http.get(url) as response:
                for line in (await response.text()).splitlines():
                    if line.startswith((f"{name} ", f"{name}{{")):
                        total += float(line.rsplit(" ", 1)[1])
    return total


async def read_topic(
    bootstrap: str,
    topic: str,
    enough: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout_s: float = 60.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from the start, read until `enough(records)` says so; those of a
    topic the system sends to are held to the contract (tests/contracts.py)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout_s):
            while not enough(records):
                batch = await consumer.getmany(timeout_ms=500)
                records += [record for part in batch.values() for record in part]
    except TimeoutError:
        raise NotEnoughRecords(topic, records, timeout_s) from None
    finally:
        await consumer.stop()
    for record in records:
        check_topic_record(topic, record.value, record.headers)
    return records


def status_update(ride_id: str, status: str, stripe_session_id: str) -> Message:
    """A `payment_status_update` for a 7.00 USD ride, for tests about delivery, not content."""
    return messages.payment_status_update(
        ride_id, status, stripe_session_id, amount=700, currency="usd"
    )


# Our services' processes are named after the service, with or without a suffix (`webhook`,
# `consumer-<id>`): their logs are `<name>.log` in the tests' logs folder.
SERVICES = ("consumer", "webhook", "notifier")


def service_logs(logs_dir: Path) -> list[Path]:
    return sorted(log for log in logs_dir.glob("*.log") if log.stem.split("-")[0] in SERVICES)


def not_json_objects(lines: Iterable[str]) -> list[str]:
    """The non-empty lines that are not one JSON object each."""
    bad = []
    for line in filter(str.strip, lines):
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            bad.append(line)
    return bad


class NewLogLines:
    """The complete lines a log file got since this reader last read it."""

    def __init__(self) -> None:
        self._read: dict[Path, int] = {}

    def __call__(self, log: Path) -> list[str]:
        start = self._read.get(log, 0)
        with log.open("rb") as file:
            file.seek(start)
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for next time
        self._read[log] = start + len(complete)
        return complete.decode(errors="replace").splitlines()
