"""The three services as subprocesses, wired to the session's real parts."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from devstack import servers
from services.webhook.app import WEBHOOK_PATH
from tests.conftest import TEST_STRIPE_KEY, TEST_WEBHOOK_SECRET, RunningPart
from tests.contracts import check_http_answer
from tests.helpers import NewLogLines, eventually, http_status, not_json_objects, service_logs


@dataclass
class System:
    consumer: servers.ChildProcess
    webhook: servers.ChildProcess
    notifier: servers.ChildProcess
    env: dict[str, str]
    stripe_url: str
    webhook_internal_port: int

    def url(self, process: servers.ChildProcess, path: str = "") -> str:
        return f"http://127.0.0.1:{process.port}{path}"

    def internal_url(self, process: servers.ChildProcess, path: str = "") -> str:
        """Where `process` serves readiness and metrics (and the webhook its payments API)."""
        port = self.webhook_internal_port if process is self.webhook else process.port
        return f"http://127.0.0.1:{port}{path}"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.notifier.port}/payment-ws"


def service_environment(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe: RunningPart,
    database: str,
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.url,
        "MONGODB_URI": mongo.url,
        "MONGODB_DATABASE": database,
        "REDIS_URL": redis_server.url,
        "STRIPE_SECRET_KEY": TEST_STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe.url,
        "KAFKA_SESSION_TIMEOUT_S": "4",
        "LOG_LEVEL": "INFO",
    }


def webhook_process(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe: RunningPart,
    logs_dir: Path,
    name: str,
    **settings: str,
) -> servers.ChildProcess:
    """A webhook process, not started yet, on free ports and a database of its own (`name`)."""
    port, internal_port = servers.free_port(), servers.free_port()
    env = service_environment(kafka, mongo, redis_server, stripe, name)
    env |= {"PORT": str(port), "INTERNAL_PORT": str(internal_port), **settings}
    return servers.python_module(name, "services.webhook", port, logs_dir, env)


async def wait_ready(system: System, *processes: servers.ChildProcess) -> None:
    for process in processes:
        await eventually(
            functools.partial(_is_ready, system, process),
            timeout_s=60,
            what=f"{process.name} /readyz",
        )


async def _is_ready(system: System, process: servers.ChildProcess) -> bool:
    if not process.running:
        raise AssertionError(f"{process.name} exited: {process.tail()}")
    return await http_status(system.internal_url(process, "/readyz")) == 200


@pytest.fixture
async def own_kafka(logs_dir: Path) -> AsyncIterator[RunningPart]:
    """A broker of the test's own, so group offsets and topics start empty."""
    port = servers.free_port()
    part = servers.tansu(port, logs_dir)
    part.start()
    await servers.ensure_topics(f"127.0.0.1:{port}")
    yield RunningPart(part, f"127.0.0.1:{port}")
    part.stop()


@pytest.fixture(scope="module")
async def system(
    kafka: RunningPart,
    mongo: RunningPart,
    redis_server: RunningPart,
    stripe_simulator: RunningPart,
    logs_dir: Path,
) -> AsyncIterator[System]:
    env = service_environment(kafka, mongo, redis_server, stripe_simulator, "e2e")
    ports = {name: servers.free_port() for name in ("consumer", "webhook", "notifier")}
    webhook_internal_port = servers.free_port()

    def start(name: str) -> servers.ChildProcess:
        own_env = {**env, "PORT": str(ports[name]), "INTERNAL_PORT": str(webhook_internal_port)}
        process = servers.python_module(name, f"services.{name}", ports[name], logs_dir, own_env)
        process.start(timeout_s=60)
        return process

    webhook, notifier = start("webhook"), start("notifier")
    system = System(
        start("consumer"), webhook, notifier, env, stripe_simulator.url, webhook_internal_port
    )
    await configure_simulator(stripe_simulator.url, system.url(system.webhook, WEBHOOK_PATH))
    await wait_ready(system, system.webhook, system.notifier, system.consumer)
    yield system
    for process in (system.consumer, system.webhook, system.notifier):
        process.stop()


async def configure_simulator(stripe_url: str, webhook_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        config = {"webhook_url": webhook_url, "webhook_secret": TEST_WEBHOOK_SECRET}
        async with session.post(f"{stripe_url}/_sim/config", json=config) as response:
            assert response.status == 200, await response.text()


_NEW_LOG_LINES = NewLogLines()


def assert_service_logs_are_json(logs_dir: Path) -> None:
    """Every line our services' processes wrote since the last look is one JSON object, so
    that a log pipeline parses every line (tests/helpers.py says which logs are theirs)."""
    bad = {log.name: not_json_objects(_NEW_LOG_LINES(log)) for log in service_logs(logs_dir)}
    shown = {name: [line[:300] for line in lines[:5]] for name, lines in bad.items() if lines}
    assert not shown, f"log lines that are not one JSON object: {shown}"


@pytest.fixture(scope="module", autouse=True)
def service_logs_of_the_module_are_json(logs_dir: Path) -> Iterator[None]:
    """Set up before the module's processes start and torn down after they stop."""
    for log in service_logs(logs_dir):
        _NEW_LOG_LINES(log)  # written outside the e2e tests: not judged here
    yield
    assert_service_logs_are_json(logs_dir)


@pytest.fixture(autouse=True)
def service_logs_are_json(logs_dir: Path) -> Iterator[None]:
    """After each test, so that a line is blamed on the test during which it was written."""
    yield
    assert_service_logs_are_json(logs_dir)


# (event id, attempt) of the webhook answers already held to the contract in this session.
_ANSWERS_CHECKED: set[tuple[str, int]] = set()


@pytest.fixture(autouse=True)
async def webhook_answers_follow_the_contract(
    request: pytest.FixtureRequest,
) -> AsyncIterator[None]:
    """After each test that ran the Stripe simulator, every answer the webhook gave it is held
    to contracts/openapi.yaml (tests/contracts.py)."""
    if "stripe_simulator" not in request.fixturenames:
        yield
        return
    simulator: RunningPart = request.getfixturevalue("stripe_simulator")
    yield
    await check_webhook_answers(simulator.url)


async def check_webhook_answers(stripe_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{stripe_url}/_sim/events") as response:
            events = (await response.json())["data"]
    for event in events:
        for attempt in event["delivery"]["attempts"]:
            answered = attempt["status"] is not None and attempt["url"].endswith(WEBHOOK_PATH)
            seen = (event["id"], attempt["attempt"])
            if answered and seen not in _ANSWERS_CHECKED:
                _ANSWERS_CHECKED.add(seen)
                check_http_answer("post", WEBHOOK_PATH, attempt["status"], attempt["answer"])
