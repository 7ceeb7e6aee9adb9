"""`make docs`'s two pages work offline: opened from disk in Chromium with every network request
refused, each renders its API. Run when the docs tools are installed (`make docs` installs
them with npm; `make test` does not)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_rider_page import CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
DOCS_TOOLS = ROOT / "contracts" / "docs-tools" / "node_modules" / ".installed"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed"),
    pytest.mark.skipif(not DOCS_TOOLS.exists(), reason="no docs tools: run make docs once"),
]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    made = subprocess.run(
        ["make", "docs", f"DOCS={folder}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return folder


@pytest.mark.parametrize(
    ("page", "rendered"),
    [
        # Redoc's script replaces the prerendered "Loading..." by its search box.
        ("openapi.html", "text=Search"),
        ("asyncapi/index.html", "#introduction"),
    ],
)
async def test_the_page_renders_with_no_network(
    docs: Path, browser: Any, page: str, rendered: str
) -> None:
    from playwright.async_api import Route, expect

    refused: list[tuple[str, str]] = []

    async def refuse(route: Route) -> None:
        refused.append((route.request.resource_type, route.request.url))
        await route.abort()

    tab = await browser.new_page()
    await tab.route(re.compile(r"^(https?|wss?)://"), refuse)
    await tab.goto((docs / page).as_uri())
    await expect(tab.locator(rendered).first).to_be_visible()
    await expect(tab.get_by_text("Loading...")).to_have_count(0)
    # Redocly's attribution logo is the one thing from the network; it hides when it fails.
    assert [url for kind, url in refused if kind != "image"] == []
