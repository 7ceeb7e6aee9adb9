"""The rider page's connection in headless Chromium: it comes back after its own server and the
notifier restart, stops on a permanent refusal, uses a JWT, keeps one socket per page, and shows
what Checkout redirected it with."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from devstack import servers
from tests.browser.test_rider_page import CHROMIUM
from tests.conftest import RunningPart
from tests.e2e.conftest import System
from tests.e2e.test_payment_flow import publish_ride
from tests.helpers import eventually

JWT_SECRET = "rider-page-test-secret-of-at-least-32-bytes"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


def page_server(notifier_url: str, logs: Path) -> servers.ChildProcess:
    port = servers.free_port()
    args = ["--port", str(port), "--notifier", notifier_url]
    return servers.python_module("rider-page", "devstack.rider_page", port, logs, {}, args)


@pytest.fixture
async def jwt_notifier(system: System, logs_dir: Path) -> AsyncIterator[servers.ChildProcess]:
    """A notifier of the test's own that requires tokens (and counts only our sockets)."""
    port = servers.free_port()
    env = {**system.env, "PORT": str(port), "NOTIFIER_JWT_SECRET": JWT_SECRET}
    notifier = servers.python_module("notifier-jwt", "services.notifier", port, logs_dir, env)
    await asyncio.to_thread(notifier.start, 60.0)
    yield notifier
    notifier.stop()


async def test_reconnects_after_the_page_server_and_the_notifier_restart(
    system: System, kafka: RunningPart, browser: Any, unique: str, logs_dir: Path
) -> None:
    from playwright.async_api import expect

    user, ride = f"rider-{unique}", f"ride-{unique}"
    server = page_server(system.websocket_url, logs_dir)
    await asyncio.to_thread(server.start)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await page.fill("#user-id", user)
        await page.click("#connect")
        state = page.locator("#connection")
        await expect(state).to_have_text(f"connected as {user}", timeout=30_000)

        # Both down: the socket drops, and the next attempt fails before any socket exists.
        server.stop()
        system.notifier.stop()
        await expect(state).to_contain_text("page server", timeout=30_000)
        await expect(state).to_contain_text("reconnecting in", timeout=30_000)

        await asyncio.to_thread(server.start)
        await asyncio.to_thread(system.notifier.start, 60.0)
        await expect(state).to_have_text(f"connected as {user}", timeout=60_000)

        await publish_ride(kafka, ride, user, "12.30")
        row = page.locator(f'li[data-ride-id="{ride}"]')
        await expect(row.locator(".status")).to_have_text("pending", timeout=30_000)
        await expect(row.locator(".pay-link")).to_be_visible()
    finally:
        server.stop()
        if not system.notifier.running:
            await asyncio.to_thread(system.notifier.start, 60.0)


async def test_a_refused_token_is_shown_and_not_retried_and_a_valid_one_connects(
    jwt_notifier: servers.ChildProcess, browser: Any, unique: str, logs_dir: Path
) -> None:
    from playwright.async_api import expect

    user = f"rider-{unique}"
    server = page_server(f"ws://127.0.0.1:{jwt_notifier.port}/payment-ws", logs_dir)
    await asyncio.to_thread(server.start)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await page.fill("#user-id", user)
        await page.fill("#token", token_for("someone-else"))
        await page.click("#connect")
        state = page.locator("#connection")
        await expect(state).to_contain_text("not reconnecting", timeout=30_000)
        await expect(state).to_contain_text("1008")
        await expect(page.locator("#notice")).to_contain_text("notifier:")
        # No further attempts: the refusal stays on screen and no socket is open.
        await asyncio.sleep(2)  # a retry would have started within 1 s
        await expect(state).to_contain_text("not reconnecting")
        assert await open_sockets(jwt_notifier) == 0

        await page.fill("#token", token_for(user))
        await page.click("#connect")
        await expect(state).to_have_text(f"connected as {user}", timeout=30_000)
    finally:
        server.stop()


async def test_switching_user_keeps_one_socket(
    jwt_notifier: servers.ChildProcess, browser: Any, unique: str, logs_dir: Path
) -> None:
    from playwright.async_api import expect

    server = page_server(f"ws://127.0.0.1:{jwt_notifier.port}/payment-ws", logs_dir)
    await asyncio.to_thread(server.start)
    try:
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{server.port}/")
        users = [f"rider-{unique}-{n}" for n in range(4)]
        for user in users:  # as fast as the rider can click, before any socket opens
            await page.fill("#user-id", user)
            await page.fill("#token", token_for(user))
            await page.click("#connect")
        await expect(page.locator("#connection")).to_have_text(
            f"connected as {users[-1]}", timeout=30_000
        )
        await eventually(
            lambda: _sockets_are(jwt_notifier, 1), timeout_s=30, what="exactly one open socket"
        )
    finally:
        server.stop()


async def test_shows_what_checkout_redirected_with(
    system: System, browser: Any, logs_dir: Path
) -> None:
    from playwright.async_api import expect

    server = page_server(system.websocket_url, logs_dir)
    await asyncio.to_thread(server.start)
    try:
        page = await browser.new_page()
        base = f"http://127.0.0.1:{server.port}/"
        await page.goto(base + "?result=success&session_id=cs_test_x")
        await expect(page.locator("#result")).to_contain_text("Payment submitted")
        await page.goto(base + "?result=cancel")
        await expect(page.locator("#result")).to_contain_text("left Checkout")
    finally:
        server.stop()


def token_for(user: str) -> str:
    claims = {"sub": user, "exp": int(time.time()) + 600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def open_sockets(notifier: servers.ChildProcess) -> int:
    url = f"http://127.0.0.1:{notifier.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    found = re.search(r"^payments_notifier_connections (\S+)$", text, re.MULTILINE)
    return int(float(found[1])) if found else 0


async def _sockets_are(notifier: servers.ChildProcess, count: int) -> bool:
    return await open_sockets(notifier) == count
