"""`python -m services.notifier` as a real process: JSON logs, SIGTERM and bad settings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from devstack import servers
from shared import messages
from tests.conftest import RunningPart
from tests.helpers import eventually, http_status, next_message
from tests.integration.test_notifier import expect_close
from tests.integration.test_notifier import session as session

ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_closes_sockets_with_1001_and_exits_cleanly(
    redis_server: RunningPart, logs_dir: Path, session: aiohttp.ClientSession, unique: str
) -> None:
    port = servers.free_port()
    env = {"PORT": str(port), "REDIS_URL": redis_server.url, "LOG_LEVEL": "INFO"}
    notifier = servers.python_module(f"notifier-{unique}", "services.notifier", port, logs_dir, env)
    await asyncio.to_thread(notifier.start)
    try:

        async def ready() -> bool:
            return await http_status(f"http://127.0.0.1:{port}/readyz") == 200

        await eventually(ready, timeout_s=30, what="the notifier to be ready")
        user = f"user-{unique}"
        socket = await session.ws_connect(f"ws://127.0.0.1:{port}/payment-ws?userId={user}")
        assert await next_message(socket) == messages.registration_success(user)

        notifier.signal(signal.SIGTERM)
        await expect_close(socket, aiohttp.WSCloseCode.GOING_AWAY)
        assert notifier.process is not None
        assert await asyncio.to_thread(notifier.process.wait, 30) == 0
    finally:
        await asyncio.to_thread(notifier.stop)

    lines = [json.loads(line) for line in notifier.log_path.read_text().splitlines() if line]
    assert all(line["service"] == "notifier" for line in lines)
    warnings = [line["message"] for line in lines if line["level"] == "warning"]
    assert any("NOTIFIER_JWT_SECRET" in text for text in warnings), "auth is off: say so"
    assert any(line.get("userId") == user for line in lines), "registration is logged"


async def test_an_unusable_public_key_stops_the_start_with_one_clear_line() -> None:
    env = {**os.environ, "NOTIFIER_JWT_PUBLIC_KEY": "not a pem", "PORT": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.notifier",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert stderr.decode().strip().startswith("notifier: NOTIFIER_JWT_PUBLIC_KEY is not a PEM")
    assert len(stderr.decode().strip().splitlines()) == 1
