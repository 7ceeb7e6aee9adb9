"""A payment whose Checkout Session Stripe does not know (404, as after switching from test to
live keys) is counted and logged once, then asked about ever more rarely, not every run."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from services.webhook.reconciler import UNKNOWN_SESSIONS, Reconciler
from shared.store import PaymentStore
from tests.integration.test_reconciliation import (  # noqa: F401 - the fixtures they share
    gateway,
    make_reconciler,
    relay,
    simulator,
)

HOUR_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def payment_with_unknown_session(store: PaymentStore, ride: str) -> None:
    reserved = await store.reserve(ride, f"user-{ride}", 1500, "usd")
    await store.attach_session(reserved, f"cs_live_{ride}", "https://checkout.stripe.com/x")


def unknown_session_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "services.webhook.reconciler"
    ]


async def test_an_unknown_session_is_counted_logged_once_and_backed_off(
    store: PaymentStore,
    make_reconciler: Callable[..., Reconciler],  # noqa: F811 - the imported fixture
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ride = f"unknown-{unique}"
    await payment_with_unknown_session(store, ride)
    clock = Clock()
    reconciler = make_reconciler(clock=clock)
    counted = UNKNOWN_SESSIONS._value.get()

    with caplog.at_level(logging.INFO, logger="services.webhook.reconciler"):
        assert (await reconciler.run_once()).checked == 1
        for _ in range(3):  # the next runs leave it alone
            assert (await reconciler.run_once()).checked == 0
        clock.now += 2 * HOUR_S  # past the first back-off: asked again, not logged again
        assert (await reconciler.run_once()).checked == 1
        assert (await reconciler.run_once()).checked == 0

    assert UNKNOWN_SESSIONS._value.get() == counted + 2
    [warning] = unknown_session_warnings(caplog)
    assert warning.__dict__["rideId"] == ride
    assert "404" in warning.getMessage() or "404" in str(warning.__dict__.get("error"))
    payment = await store.find({"rideId": ride})
    assert payment is not None and payment.status.value == "pending"
