"""`make run` points Checkout's redirects at the rider page, unless the developer chose them; the
simulator's hosted Checkout then sends the rider there as Stripe does; and no page of the local
stack makes the browser ask for a favicon it does not have."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from devstack.rider_page.app import create_app as rider_page_app
from devstack.stack import Ports, Stack, StackOptions
from devstack.stripe_simulator.app import create_app as simulator_app
from shared.stripe_gateway import CheckoutRequest, StripeGateway
from tests.helpers import serve

NO_ICON = '<link rel="icon" href="data:,">'


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    for name in ("SUCCESS_REDIRECT_URL", "CANCEL_REDIRECT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYMENTS_CONFIG", str(tmp_path / "absent.toml"))
    return Stack(StackOptions(folder=tmp_path, ports=Ports(rider_page=8181)))


def test_checkout_returns_to_the_rider_page_with_the_result(stack: Stack) -> None:
    env = stack.service_environment()
    assert env["SUCCESS_REDIRECT_URL"] == (
        "http://127.0.0.1:8181/?result=success&session_id={CHECKOUT_SESSION_ID}"
    )
    assert env["CANCEL_REDIRECT_URL"] == "http://127.0.0.1:8181/?result=cancel"


def test_a_redirect_set_in_the_environment_or_config_file_wins(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUCCESS_REDIRECT_URL", "https://mine.example/ok")
    config = tmp_path / "Config.toml"
    config.write_text('[payments]\ncancelRedirectUrl = "https://mine.example/no"\n')
    monkeypatch.setenv("PAYMENTS_CONFIG", str(config))
    env = stack.service_environment()
    assert "SUCCESS_REDIRECT_URL" not in env
    assert "CANCEL_REDIRECT_URL" not in env


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    runner, url = await serve(simulator_app())
    yield url
    await runner.cleanup()


async def checkout_page(simulator: str, stack: Stack, ride: str) -> tuple[str, str]:
    """A session with `make run`'s redirects: its hosted page, and its id."""
    env = stack.service_environment()
    request = CheckoutRequest(
        ride, "u1", 700, "usd", env["SUCCESS_REDIRECT_URL"], env["CANCEL_REDIRECT_URL"]
    )
    gateway = StripeGateway("sk_test_redirects", simulator)
    try:
        session = await gateway.create_checkout_session(request)
    finally:
        await gateway.close()
    assert session.url is not None
    return session.url, session.id


@pytest.mark.parametrize(
    ("action", "back_to"),
    [
        ("pay", "http://127.0.0.1:8181/?result=success&session_id={id}"),
        ("cancel", "http://127.0.0.1:8181/?result=cancel"),
        ("abandon", "http://127.0.0.1:8181/?result=cancel"),
    ],
)
async def test_the_hosted_page_sends_the_rider_back_by_itself(
    simulator: str, stack: Stack, action: str, back_to: str
) -> None:
    page, session_id = await checkout_page(simulator, stack, f"ride-{action}")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{page}/{action}", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == back_to.format(id=session_id)
            # For a client that does not follow redirects: the link.
            link = html.escape(back_to.format(id=session_id), quote=True)
            assert f'href="{link}"' in await response.text()


@pytest.mark.parametrize("action", ["decline", "expire"])
async def test_a_declined_card_or_an_expired_session_stays_on_a_page(
    simulator: str, stack: Stack, action: str
) -> None:
    page, _ = await checkout_page(simulator, stack, f"ride-{action}")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{page}/{action}", allow_redirects=False) as response:
            assert response.status == 200
            assert 'id="next"' in await response.text()


async def test_no_page_makes_the_browser_ask_for_a_favicon(simulator: str, stack: Stack) -> None:
    """Without an icon declared, a browser asks each server for /favicon.ico: a 404 logged on
    every page. `data:,` declares none."""
    runner, rider_page = await serve(rider_page_app("ws://127.0.0.1:9/payment-ws"))
    checkout, _ = await checkout_page(simulator, stack, "ride-icons")
    pages = [
        ("GET", rider_page + "/"),
        ("GET", checkout),
        ("POST", checkout + "/decline"),
        ("POST", checkout + "/pay"),
        ("POST", checkout + "/pay"),  # no longer open: 409
        ("GET", simulator + "/checkout/cs_test_unknown"),
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for method, url in pages:
                async with http.request(method, url, allow_redirects=False) as response:
                    assert response.content_type == "text/html", url
                    assert NO_ICON in await response.text(), f"{method} {url}"
    finally:
        await runner.cleanup()
