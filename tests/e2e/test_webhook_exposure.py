"""The webhook process as the internet meets it: the public port serves Stripe's deliveries and
/healthz only; the internal port wants a bearer token for the payments API; an oversized body
is refused at once and its connection closed; no log line quotes a request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from devstack import servers
from services.webhook.app import MAX_BODY_BYTES, WEBHOOK_PATH, create_internal_app
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.e2e.conftest import service_environment
from tests.helpers import eventually, http_status
from tests.integration.test_webhook import seed, signed
from tests.stripe_shapes import stripe_event

TOKENS = ("token-old-4f1c", "token-new-9a2e")
DATABASE = f"exposure-{uuid.uuid4().hex[:8]}"


@dataclass
class Webhook:
    process: servers.ChildProcess
    internal_port: int

    def public(self, path: str) -> str:
        return f"http://127.0.0.1:{self.process.port}{path}"

    def internal(self, path: str) -> str:
        return f"http://127.0.0.1:{self.internal_port}{path}"

    def cpu_seconds(self) -> float:
        assert self.process.process is not None
        times = psutil.Process(self.process.process.pid).cpu_times()
        return float(times.user + times.system)


@pytest.fixture(scope="module")
async def webhook(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
) -> AsyncIterator[Webhook]:
    port, internal_port = servers.free_port(), servers.free_port()
    env = {
        **service_environment(kafka, mongo, redis_server, stripe_simulator, DATABASE),
        "PORT": str(port),
        "INTERNAL_PORT": str(internal_port),
        "INTERNAL_API_TOKENS": ",".join(TOKENS),
    }
    process = servers.python_module("webhook-exposure", "services.webhook", port, logs_dir, env)
    process.start(timeout_s=60)
    running = Webhook(process, internal_port)

    async def ready() -> bool:
        return await http_status(running.internal("/readyz")) == 200

    try:
        await eventually(ready, timeout_s=60, what="the webhook's /readyz on the internal port")
        yield running
    finally:
        assert process.stop() == 0, "SIGTERM: a graceful exit"


@pytest.fixture
async def seeded_ride(mongo: RunningPart, unique: str) -> AsyncIterator[str]:
    store = PaymentStore.connect(mongo.url, DATABASE, "payments")
    ride = f"ride-{unique}"
    await seed(store, ride)
    yield ride
    await store.close()


async def status_of(url: str, method: str = "GET", token: str | None = None) -> int:
    headers = {"Authorization": token} if token else {}
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        return r.status


async def test_the_public_port_serves_only_the_webhook_and_healthz(
    webhook: Webhook, seeded_ride: str
) -> None:
    assert await status_of(webhook.public("/healthz")) == 200
    body = json.dumps(stripe_event("customer.created", {"id": "cus_1"})).encode()
    async with aiohttp.ClientSession() as http:
        headers = {"Stripe-Signature": signed(body)}
        async with http.post(webhook.public(WEBHOOK_PATH), data=body, headers=headers) as r:
            assert (r.status, (await r.json())["result"]) == (200, "ignored")
    bearer = f"Bearer {TOKENS[0]}"
    for path in (f"/payment-service/payments/{seeded_ride}", "/readyz", "/metrics", "/"):
        assert await status_of(webhook.public(path)) == 404, path
        assert await status_of(webhook.public(path), token=bearer) == 404, path


def test_a_payments_api_without_tokens_is_said_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_internal_app(web.Application(), [])
    assert "INTERNAL_API_TOKENS is not set" in caplog.text


async def test_the_internal_port_wants_a_token_for_the_payments_api_only(
    webhook: Webhook, seeded_ride: str
) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert await status_of(webhook.internal(path)) == 200, path
    api = webhook.internal(f"/payment-service/payments/{seeded_ride}")
    for refused in (None, "Bearer", "Bearer wrong", f"Basic {TOKENS[0]}", f"Bearer {TOKENS[0]}x"):
        assert await status_of(api, token=refused) == 401, refused
    for token in TOKENS:
        assert await status_of(api, token=f"Bearer {token}") == 200, token
    unknown = webhook.internal(f"/payment-service/payments/nope-{seeded_ride}")
    assert await status_of(unknown, token=f"Bearer {TOKENS[1]}") == 404


def request_head(content_length: int | None) -> bytes:
    length = f"Content-Length: {content_length}" if content_length else "Transfer-Encoding: chunked"
    return (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: t=1,v1={'0' * 64}\r\n{length}\r\n\r\n"
    ).encode()


class Answer(asyncio.Protocol):
    """What a client receives on one connection, and when the server closed it (reset or not)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


async def post_just_over_the_limit(port: int) -> bytes:
    """What the server answers before it closes the connection (the whole body is sent)."""
    loop = asyncio.get_running_loop()
    transport, answer = await loop.create_connection(Answer, "127.0.0.1", port)
    try:
        transport.write(request_head(MAX_BODY_BYTES + 1) + b"x" * (MAX_BODY_BYTES + 1))
        async with asyncio.timeout(20):  # a connection kept open fails here
            await answer.closed
        return bytes(answer.received)
    finally:
        transport.close()


async def test_oversized_bodies_are_refused_at_once_and_their_connections_closed(
    webhook: Webhook,
) -> None:
    cpu_before, started = webhook.cpu_seconds(), time.monotonic()
    answers: list[bytes] = []
    for _ in range(20):
        batch = [post_just_over_the_limit(webhook.process.port) for _ in range(25)]
        answers += await asyncio.gather(*batch)
    elapsed_s = time.monotonic() - started
    cpu_ms_each = (webhook.cpu_seconds() - cpu_before) * 1000 / len(answers)
    print(f"500 oversized POSTs: {elapsed_s:.1f} s, webhook CPU {cpu_ms_each:.2f} ms each")
    assert all(answer.startswith(b"HTTP/1.1 413") for answer in answers), {a[:30] for a in answers}
    assert cpu_ms_each < 2.0
    assert elapsed_s < 60


async def test_a_chunked_body_is_cut_off_at_the_limit(webhook: Webhook) -> None:
    """A sender that never stops: the server stops reading at the limit and closes."""
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    _, writer = await asyncio.open_connection("127.0.0.1", webhook.process.port)
    sent, started = 0, time.monotonic()
    writer.write(request_head(None))
    with contextlib.suppress(ConnectionError):
        while sent < 256 * 1024 * 1024 and time.monotonic() - started < 30:
            writer.write(frame)
            await writer.drain()
            sent += len(chunk)
    writer.close()
    print(f"sent {sent / 2**20:.1f} MiB before the server closed")
    # The socket buffers on both sides hold a few MiB; reading on would take all 256 MiB.
    assert sent < 32 * 1024 * 1024


MARKER = b"Q" * 99_000


async def test_no_log_line_quotes_a_request(webhook: Webhook) -> None:
    """Malformed requests of every kind, each carrying 99 KB of the same byte."""
    hostile = [
        request_head(None) + MARKER + b"\r\n",  # chunk size line
        request_head(None) + b"10;" + MARKER + b"\r\n",  # chunk extension
        request_head(None).replace(b"\r\n\r\n", b"\r\nX-Pad: " + MARKER[:8000] + b"\1\r\n\r\n"),
        b"GET /?" + MARKER + b" HTTP/1.1\r\nHost: webhook\r\n\r\n",  # request line
        b"POST " + MARKER + b" HTTP/1.1\r\n\r\n",
        MARKER + b"\r\n\r\n",  # not HTTP
        request_head(len(MARKER) + 2) + b'{"' + MARKER,  # body: not JSON, bad signature
        b"GET /healthz?token=" + MARKER[:4000] + b" HTTP/1.1\r\nHost: webhook\r\n\r\n",
    ]
    loop = asyncio.get_running_loop()
    for request in hostile:
        transport, answer = await loop.create_connection(Answer, "127.0.0.1", webhook.process.port)
        transport.write(request)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await answer.closed
        transport.close()
    assert await status_of(webhook.public("/healthz")) == 200
    lines = webhook.process.log_path.read_bytes().splitlines()
    quoting = [line[:200] for line in lines if b"QQQQQQQQQQ" in line or len(line) > 8192]
    assert not quoting, quoting
