"""The real parts, started once per test session on free ports and stopped after."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import servers
from shared.bus import NotificationBus, connect_redis
from shared.store import PaymentStore

TEST_STRIPE_KEY = "sk_test_payments_suite"
TEST_WEBHOOK_SECRET = "whsec_test_payments_suite"


@dataclass
class RunningPart:
    process: servers.ChildProcess
    url: str


def _started(part: servers.ChildProcess) -> servers.ChildProcess:
    try:
        part.start()
    except servers.MissingBinary as error:
        pytest.fail(f"cannot start {part.name}: {error}", pytrace=False)
    return part


# Where every server and process of the session writes its log, and when each test started:
# a failing test's report ends with the logs written while it ran (CI shows nothing else).
LOGS_DIR = pytest.StashKey[Path]()
STARTED_AT = pytest.StashKey[float]()
LOG_LINES_IN_REPORT = 20


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.stash[LOGS_DIR] = tmp_path_factory.mktemp("logs")
    return path


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[STARTED_AT] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    logs = item.config.stash.get(LOGS_DIR, None)
    if report.failed and logs is not None:
        started_at = item.stash.get(STARTED_AT, 0.0)
        for log in sorted(logs.glob("*.log")):
            if log.stat().st_mtime >= started_at:
                lines = log.read_text(errors="replace").splitlines()[-LOG_LINES_IN_REPORT:]
                report.sections.append((f"{log.name}, its last lines", "\n".join(lines)))
    return report


@pytest.fixture(scope="session")
async def kafka(logs_dir: Path) -> AsyncIterator[RunningPart]:
    port = servers.free_port()
    part = _started(servers.tansu(port, logs_dir))
    bootstrap = f"127.0.0.1:{port}"
    await servers.ensure_topics(bootstrap)
    yield RunningPart(part, bootstrap)
    part.stop()


@pytest.fixture(scope="session")
def mongo(logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPart]:
    port = servers.free_port()
    part = _started(servers.secantus(port, tmp_path_factory.mktemp("mongo"), logs_dir))
    yield RunningPart(part, servers.mongodb_uri(port))
    part.stop()


@pytest.fixture(scope="session")
def redis_server(logs_dir: Path) -> Iterator[RunningPart]:
    port = servers.free_port()
    part = _started(servers.redis(port, None, logs_dir))
    yield RunningPart(part, f"redis://127.0.0.1:{port}/0")
    part.stop()


@pytest.fixture(scope="session")
def stripe_simulator(logs_dir: Path) -> Iterator[RunningPart]:
    port = servers.free_port()
    url = f"http://127.0.0.1:{port}"
    part = _started(
        servers.python_module(
            "stripe-simulator",
            "devstack.stripe_simulator",
            port,
            logs_dir,
            env={},
            args=[
                "--api-key",
                TEST_STRIPE_KEY,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webhook-secret",
                TEST_WEBHOOK_SECRET,
            ],
        )
    )
    yield RunningPart(part, url)
    part.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so tests sharing the session's servers never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def store(mongo: RunningPart, unique: str) -> AsyncIterator[PaymentStore]:
    payments = PaymentStore.connect(mongo.url, f"test-{unique}", "payments")
    await payments.ensure_indexes()
    yield payments
    await payments.close()


@pytest.fixture
async def bus(redis_server: RunningPart) -> AsyncIterator[NotificationBus]:
    notifications = NotificationBus(connect_redis(redis_server.url))
    yield notifications
    await notifications.close()
