"""A rider pays through the real page in headless Chromium and watches the status turn."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devstack import servers
from devstack.rider_page.app import create_app
from tests.conftest import RunningPart
from tests.e2e.conftest import System
from tests.e2e.test_payment_flow import publish_ride

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a root, offline, headless Chromium (see the machine notes in the README).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
async def rider_page(system: System) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(system.websocket_url))
    await runner.setup()
    port = servers.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def connected_rider(browser: Any, rider_page: str, user: str) -> Any:
    """A new tab on the rider page, connected as `user`."""
    from playwright.async_api import expect

    page = await browser.new_page()
    await page.goto(rider_page)
    await page.fill("#user-id", user)
    await page.click("#connect")
    await expect(page.locator("#connection")).to_have_text(f"connected as {user}")
    return page


async def test_rider_pays_on_the_checkout_page_and_sees_succeeded(
    rider_page: str, kafka: RunningPart, unique: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    ride, user = f"ride-{unique}", f"rider-{unique}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await connected_rider(browser, rider_page, user)

            await publish_ride(kafka, ride, user, "18.40")
            row = page.locator(f'li[data-ride-id="{ride}"]')
            await expect(row.locator(".status")).to_have_text("pending", timeout=30_000)

            async with page.expect_popup() as opened:
                await row.locator(".pay-link").click()
            checkout = await opened.value
            await expect(checkout.locator("body")).to_contain_text("18.40")
            await checkout.click("#pay")

            await expect(row.locator(".status")).to_have_text("succeeded", timeout=30_000)
            await page.bring_to_front()
            shots = Path(os.environ.get("RIDER_PAGE_SCREENSHOT_DIR", tmp_path))
            await page.screenshot(path=str(shots / "rider-page.png"))
        finally:
            await browser.close()
