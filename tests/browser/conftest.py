from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser.test_rider_page import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.conftest import system  # noqa: F401 - the running system, shared with e2e


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium (tests that use it are skipped when it is not installed)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()
