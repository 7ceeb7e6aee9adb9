"""Issue 24, finding 8: outside the local stack a service without auth does not start, and the
local stack's services listen on loopback only. Real processes throughout."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from devstack import servers
from tests.conftest import RunningPart
from tests.helpers import eventually, http_status

ROOT = Path(__file__).resolve().parents[2]
LONG_ENOUGH = "s" * 32
# What the webhook needs to get as far as its auth check.
BASE = {"STRIPE_WEBHOOK_SECRET": "whsec_start_test"}
OWN_SETTINGS = {
    "PAYMENTS_ENVIRONMENT",
    "BIND_HOST",
    "PAYMENTS_CONFIG",
    "INTERNAL_API_TOKENS",
    "NOTIFIER_JWT_SECRET",
    "NOTIFIER_JWT_PUBLIC_KEY",
}


async def refused_start(module: str, env: dict[str, str]) -> tuple[int | None, list[str]]:
    """Start `module` in production with `env`; its exit code and the lines of its stderr."""
    inherited = {name: value for name, value in os.environ.items() if name not in OWN_SETTINGS}
    ports = {"PORT": str(servers.free_port()), "INTERNAL_PORT": str(servers.free_port())}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", module],
        cwd=ROOT,
        env={**inherited, **BASE, **ports, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()  # it started: the test fails, and leaves nothing running
        await process.wait()
        raise
    return process.returncode, stderr.decode().strip().splitlines()


@pytest.mark.parametrize(
    ("tokens", "said"),
    [
        (None, "INTERNAL_API_TOKENS is required by the webhook"),
        (" , ", "INTERNAL_API_TOKENS is required by the webhook"),
        (f"{LONG_ENOUGH},short", "INTERNAL_API_TOKENS: token 2 of 2 has 5 bytes"),
    ],
)
async def test_the_webhook_does_not_start_in_production_without_long_api_tokens(
    tokens: str | None, said: str
) -> None:
    env = {} if tokens is None else {"INTERNAL_API_TOKENS": tokens}
    code, lines = await refused_start("services.webhook", env)
    assert code != 0
    assert lines == [lines[0]] and lines[0].startswith(f"webhook: {said}"), lines


@pytest.mark.parametrize(
    ("secret", "said"),
    [
        (None, "NOTIFIER_JWT_SECRET or NOTIFIER_JWT_PUBLIC_KEY is required by the notifier"),
        ("x", "NOTIFIER_JWT_SECRET has 1 bytes; at least 32"),
    ],
)
async def test_the_notifier_does_not_start_in_production_without_a_key(
    secret: str | None, said: str
) -> None:
    env = {} if secret is None else {"NOTIFIER_JWT_SECRET": secret}
    code, lines = await refused_start("services.notifier", env)
    assert code != 0
    assert lines == [lines[0]] and lines[0].startswith(f"notifier: {said}"), lines


def listening_hosts(process: servers.ChildProcess) -> set[str]:
    assert process.process is not None
    sockets = psutil.Process(process.process.pid).net_connections(kind="inet")
    return {s.laddr.ip for s in sockets if s.status == psutil.CONN_LISTEN}


@pytest.mark.parametrize(
    ("environment", "hosts"),
    [
        ({"PAYMENTS_ENVIRONMENT": "local"}, {"127.0.0.1"}),
        ({"NOTIFIER_JWT_SECRET": LONG_ENOUGH}, None),  # production: every interface
        ({"PAYMENTS_ENVIRONMENT": "local", "BIND_HOST": "0.0.0.0"}, {"0.0.0.0"}),
    ],
)
async def test_where_the_notifier_listens(
    redis_server: RunningPart,
    logs_dir: Path,
    unique: str,
    environment: dict[str, str],
    hosts: set[str] | None,
) -> None:
    port = servers.free_port()
    env = {"PORT": str(port), "REDIS_URL": redis_server.url, **environment}
    env.setdefault("PAYMENTS_ENVIRONMENT", "production")
    notifier = servers.python_module(f"notifier-{unique}", "services.notifier", port, logs_dir, env)
    await asyncio.to_thread(notifier.start)
    try:
        await eventually(
            lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout_s=30, what="/healthz"
        )
        listening = listening_hosts(notifier)
        if hosts is None:
            assert listening & {"0.0.0.0", "::"} and "127.0.0.1" not in listening, listening
        else:
            assert listening == hosts
    finally:
        await asyncio.to_thread(notifier.stop)


async def _answers(url: str) -> bool:
    return await http_status(url) == 200
