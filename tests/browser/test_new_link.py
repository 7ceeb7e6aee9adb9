"""A rider lets a Checkout expire, asks for a new link on the page, pays it and sees
`succeeded`: the real page in headless Chromium, the three processes, the Stripe simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from devstack import servers
from devstack.rider_page.app import create_app
from tests.browser.test_rider_page import CHROMIUM, CHROMIUM_ARGS, connected_rider
from tests.conftest import RunningPart
from tests.e2e.conftest import System
from tests.e2e.test_payment_flow import publish_ride

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
async def rider_page(system: System) -> AsyncIterator[str]:
    payments_api = system.internal_url(system.webhook, "/payment-service")
    runner = web.AppRunner(create_app(system.websocket_url, payments_api))
    await runner.setup()
    port = servers.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


async def test_rider_gets_a_new_link_after_expiry_and_pays_it(
    rider_page: str, kafka: RunningPart, unique: str
) -> None:
    from playwright.async_api import async_playwright, expect

    ride, user = f"ride-{unique}", f"rider-{unique}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await connected_rider(browser, rider_page, user)

            await publish_ride(kafka, ride, user, "21.30")
            row = page.locator(f'li[data-ride-id="{ride}"]')
            await expect(row.locator(".status")).to_have_text("pending", timeout=30_000)
            await expect(row.locator(".amount")).to_contain_text("21.30")
            first_link = await row.locator(".pay-link").get_attribute("href")

            async with page.expect_popup() as opened:
                await row.locator(".pay-link").click()
            checkout = await opened.value
            await checkout.click("#expire")
            await checkout.close()

            await expect(row.locator(".status")).to_have_text("expired", timeout=30_000)
            await expect(row.locator(".pay-link")).to_be_hidden()
            await row.locator(".new-link").click()

            await expect(row.locator(".status")).to_have_text("pending", timeout=30_000)
            await expect(row.locator(".new-link")).to_be_hidden()
            new_link = await row.locator(".pay-link").get_attribute("href")
            assert new_link and new_link != first_link

            async with page.expect_popup() as opened:
                await row.locator(".pay-link").click()
            checkout = await opened.value
            await expect(checkout.locator("body")).to_contain_text("21.30")
            await checkout.click("#pay")

            await expect(row.locator(".status")).to_have_text("succeeded", timeout=30_000)
        finally:
            await browser.close()


async def test_a_bank_debit_shows_on_its_way_then_a_new_link_once_it_failed(
    rider_page: str, system: System, kafka: RunningPart, unique: str
) -> None:
    """The rider reads "payment on its way" while a bank debit is, and once it failed, gets a
    new link from the page (the completed session can never be paid again)."""
    from playwright.async_api import async_playwright, expect

    ride, user = f"debit-{unique}", f"rider-{unique}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await connected_rider(browser, rider_page, user)

            await publish_ride(kafka, ride, user, "14.60")
            row = page.locator(f'li[data-ride-id="{ride}"]')
            await expect(row.locator(".status")).to_have_text("pending", timeout=30_000)
            first_link = await row.locator(".pay-link").get_attribute("href")
            session = await session_of(system, ride)

            await bank(system, session, "debit")
            await expect(row.locator(".status")).to_have_text("payment on its way", timeout=30_000)
            await expect(row.locator(".pay-link")).to_be_hidden()
            await expect(row.locator(".new-link")).to_be_hidden()

            await bank(system, session, "debit_fails")
            await expect(row.locator(".status")).to_have_text("failed", timeout=30_000)
            await row.locator(".new-link").click()
            await expect(row.locator(".status")).to_have_text("pending", timeout=30_000)
            new_link = await row.locator(".pay-link").get_attribute("href")
            assert new_link and new_link != first_link
        finally:
            await browser.close()


async def session_of(system: System, ride: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{system.stripe_url}/_sim/sessions") as response:
            sessions = (await response.json())["data"]
    [session] = [s["id"] for s in sessions if s["metadata"].get("rideId") == ride]
    return str(session)


async def bank(system: System, session: str, action: str) -> None:
    """What the rider's bank does with a debit (`debit`, `debit_fails`), at the simulator."""
    async with aiohttp.ClientSession() as http:
        url = f"{system.stripe_url}/_sim/sessions/{session}/{action}"
        async with http.post(url) as response:
            assert response.status == 200, await response.text()
