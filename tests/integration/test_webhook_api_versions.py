"""Events arrive in the webhook endpoint's API version, which should be the one the SDK pins
(`stripe.api_version`). One in another version is still applied when its fields are understood,
with a warning and a counter an alert watches. The webhook app in-process against real MongoDB
and Redis."""

from __future__ import annotations

import logging

import pytest
import stripe
from prometheus_client import REGISTRY

from shared.store import PaymentStore
from tests.integration.test_webhook import (
    Client,
    client,
    deliver,
    seed,
    session_event,
    webhook_store,
)

__all__ = ["client", "webhook_store"]  # the fixtures this module uses

COUNTER = "payments_webhook_event_api_version_total"


def counted(version: str) -> float:
    return REGISTRY.get_sample_value(COUNTER, {"version": version}) or 0.0


def versions_counted() -> set[str]:
    return {
        sample.labels["version"]
        for metric in REGISTRY.collect()
        if metric.name == COUNTER.removesuffix("_total")
        for sample in metric.samples
        if sample.name == COUNTER
    }


async def test_an_event_in_another_api_version_is_applied_counted_and_warned_about(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    older = "2025-03-31.basil"
    before = counted(older)
    event = session_event("checkout.session.completed", ride, session_id) | {"api_version": older}
    with caplog.at_level(logging.WARNING):
        assert await deliver(client, event) == (200, {"received": True, "result": "applied"})
    assert counted(older) == before + 1
    [warning] = [r for r in caplog.records if getattr(r, "apiVersion", None) == older]
    assert warning.levelno == logging.WARNING
    assert getattr(warning, "expected", None) == stripe.api_version
    payment = await webhook_store.find({"rideId": ride})
    assert payment is not None and payment.status == "succeeded"


async def test_an_event_in_the_sdks_version_is_not_counted(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    before = counted(stripe.api_version)
    event = session_event("checkout.session.completed", ride, session_id)
    event["api_version"] = stripe.api_version
    assert (await deliver(client, event))[1]["result"] == "applied"
    assert counted(stripe.api_version) == before


async def test_the_versions_counted_are_few_whatever_the_events_say(client: Client) -> None:
    for day in range(1, 29):
        event = session_event("checkout.session.expired", "nobody", "cs_nobody")
        event["api_version"] = f"2019-02-{day:02d}"
        assert (await deliver(client, event))[0] == 200
    assert len(versions_counted()) <= 9
    assert counted("other") > 0
