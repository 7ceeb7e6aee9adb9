"""Signed events that do not match the ride they name: another amount or currency, another
PaymentIntent than the one the record knows, an attempt the ride never had, a refund larger
than the charge. Each is answered 200 `mismatched` (Stripe must not retry it), counted, logged
with the rideId, and changes nothing. The webhook app in-process against real MongoDB and
Redis; the events are Stripe's own example objects (tests/stripe_shapes.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from shared.refund_model import RefundRequest
from shared.refunds import RefundBook
from shared.store import PaymentStore
from tests.integration.test_refund_events import charge_refunded, dispute, refund_object
from tests.integration.test_webhook import (
    FARE,
    Client,
    client,
    deliver,
    intent_event,
    seed,
    session_event,
    webhook_store,
)
from tests.integration.test_webhook_hostile_input import counted
from tests.stripe_shapes import stripe_event

__all__ = ["client", "webhook_store"]  # the fixtures this module uses

MISMATCHED = "payments_webhook_mismatched_events_total"
Event = dict[str, Any]


async def record(store: PaymentStore, ride: str) -> dict[str, Any]:
    document = await store.find_document(ride)
    assert document is not None
    return document


async def refused_as_mismatched(
    client: Client, store: PaymentStore, ride: str, event: Event, caplog: pytest.LogCaptureFixture
) -> None:
    """The event is answered `mismatched`, counted, logged with the ride, and the record is as
    it was."""
    before = await record(store, ride)
    count = counted(MISMATCHED, type=event["type"])
    with caplog.at_level(logging.WARNING):
        assert await deliver(client, event) == (200, {"received": True, "result": "mismatched"})
    assert counted(MISMATCHED, type=event["type"]) == count + 1
    assert any(
        getattr(line, "rideId", None) == ride and line.levelno == logging.WARNING
        for line in caplog.records
    ), "no warning names the ride"
    after = await record(store, ride)
    assert after == before
    # A repeat is not applied either: the event is handled, answered as a duplicate.
    assert (await deliver(client, event))[1]["result"] == "duplicate"


async def test_an_intent_for_one_euro_cent_does_not_pay_a_99_dollar_ride(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The finding: another ride's id in the metadata, 1 EUR cent, a PaymentIntent of its own."""
    ride = f"ride-{unique}"
    reserved = await webhook_store.reserve(ride, f"user-{ride}", 9900, "usd")
    await webhook_store.attach_session(reserved, f"cs_{ride}", f"https://pay/cs_{ride}")
    forged = intent_event(
        "payment_intent.succeeded", ride, id=f"pi_forged_{unique}", amount=1, currency="eur"
    )
    await refused_as_mismatched(client, webhook_store, ride, forged, caplog)
    document = await record(webhook_store, ride)
    assert (document["status"], document["paymentIntentId"]) == ("pending", None)


def intent_with(**fields: Any) -> Callable[[str, str], Event]:
    return lambda ride, _: intent_event("payment_intent.succeeded", ride, **fields)


def session_with(kind: str, **fields: Any) -> Callable[[str, str], Event]:
    return lambda ride, session_id: session_event(kind, ride, session_id, **fields)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(intent_with(amount=FARE - 1), id="intent-amount"),
        pytest.param(intent_with(amount=FARE * 10), id="intent-amount-larger"),
        pytest.param(intent_with(currency="eur"), id="intent-currency"),
        pytest.param(intent_with(amount=None), id="intent-without-amount"),
        pytest.param(intent_with(currency=None), id="intent-without-currency"),
        pytest.param(
            session_with("checkout.session.completed", amount_total=1), id="session-amount"
        ),
        pytest.param(
            session_with("checkout.session.async_payment_succeeded", currency="jpy"),
            id="session-currency",
        ),
        pytest.param(
            session_with("checkout.session.expired", status="expired", amount_total=None),
            id="session-without-amount",
        ),
        pytest.param(
            session_with("checkout.session.completed", metadata={"attempt": "2"}),
            id="session-naming-another-attempt",
        ),
    ],
)
async def test_an_event_for_another_amount_currency_or_attempt_changes_nothing(
    client: Client,
    webhook_store: PaymentStore,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    make: Callable[[str, str], Event],
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    await refused_as_mismatched(client, webhook_store, ride, make(ride, session_id), caplog)


async def test_a_session_event_for_a_ride_without_a_session_must_match_too(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by its rideId (the consumer has not stored the session yet), not by session id."""
    ride = f"ride-{unique}"
    await webhook_store.reserve(ride, f"user-{ride}", FARE, "usd")
    forged = session_event("checkout.session.completed", ride, f"cs_other_{unique}", amount_total=1)
    await refused_as_mismatched(client, webhook_store, ride, forged, caplog)


async def test_an_intent_other_than_the_one_the_ride_knows_changes_nothing(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    ride = f"ride-{unique}"
    await seed(webhook_store, ride)
    declined = intent_event("payment_intent.payment_failed", ride)
    assert (await deliver(client, declined))[1]["result"] == "applied"
    other = intent_event("payment_intent.succeeded", ride, id=f"pi_other_{unique}")
    await refused_as_mismatched(client, webhook_store, ride, other, caplog)
    document = await record(webhook_store, ride)
    assert (document["status"], document["paymentIntentId"]) == ("failed", f"pi_{ride}")


async def test_a_session_naming_another_intent_than_the_rides_changes_nothing(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    declined = intent_event("payment_intent.payment_failed", ride)
    assert (await deliver(client, declined))[1]["result"] == "applied"
    other = session_event(
        "checkout.session.completed", ride, session_id, payment_intent=f"pi_other_{unique}"
    )
    await refused_as_mismatched(client, webhook_store, ride, other, caplog)


async def test_a_paid_rides_intent_is_never_replaced(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refunds go to the stored PaymentIntent: another one, even for the right amount, is
    refused."""
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    paid = session_event("checkout.session.completed", ride, session_id)
    assert (await deliver(client, paid))[1]["result"] == "applied"
    other = intent_event("payment_intent.succeeded", ride, id=f"pi_other_{unique}")
    await refused_as_mismatched(client, webhook_store, ride, other, caplog)
    assert (await record(webhook_store, ride))["paymentIntentId"] == f"pi_{ride}"


async def test_an_attempt_the_ride_never_had_changes_nothing(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    ride = f"ride-{unique}"
    await seed(webhook_store, ride)
    metadata = {"rideId": ride, "userId": f"user-{ride}", "attempt": "7"}
    future = intent_event("payment_intent.succeeded", ride, id=f"pi_7_{unique}", metadata=metadata)
    await refused_as_mismatched(client, webhook_store, ride, future, caplog)


async def test_matching_events_still_apply(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    session_id = await seed(webhook_store, ride)
    declined = intent_event("payment_intent.payment_failed", ride)
    assert (await deliver(client, declined))[1]["result"] == "applied"
    # Stripe's currencies are lowercase; an uppercase one is the same currency.
    paid = session_event("checkout.session.completed", ride, session_id, currency="USD")
    assert (await deliver(client, paid))[1]["result"] == "applied"
    assert (await record(webhook_store, ride))["status"] == "succeeded"


async def paid_ride(client: Client, store: PaymentStore, ride: str) -> None:
    session_id = await seed(store, ride)
    paid = session_event("checkout.session.completed", ride, session_id)
    assert (await deliver(client, paid))[1]["result"] == "applied"


async def test_a_refund_of_ten_times_the_charge_is_refused(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refund made outside this system (no reservation on the record) still cannot take more
    than the charge: `amountRefunded` stays between 0 and `amount`."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    outside = refund_object(ride, f"outside-{unique}", FARE * 10, "succeeded")
    outside["metadata"] = {"rideId": ride}
    await refused_as_mismatched(
        client, webhook_store, ride, stripe_event("refund.updated", outside), caplog
    )
    document = await record(webhook_store, ride)
    assert (document["status"], document.get("amountRefunded", 0)) == ("succeeded", 0)


async def test_refunds_outside_this_system_that_together_exceed_the_charge(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    first, second = (
        refund_object(ride, f"outside-{n}-{unique}", FARE * 6 // 10, "succeeded") for n in (1, 2)
    )
    first["metadata"] = second["metadata"] = {"rideId": ride}
    assert (await deliver(client, stripe_event("refund.updated", first)))[1]["result"] == "applied"
    await refused_as_mismatched(
        client, webhook_store, ride, stripe_event("refund.updated", second), caplog
    )
    assert (await record(webhook_store, ride))["amountRefunded"] == FARE * 6 // 10


async def test_a_refund_of_another_amount_than_reserved_is_refused(
    client: Client, webhook_store: PaymentStore, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await RefundBook(webhook_store).reserve(RefundRequest("a", ride, Decimal("5.00"), None))
    larger = stripe_event("refund.updated", refund_object(ride, "a", 2000, "succeeded"))
    await refused_as_mismatched(client, webhook_store, ride, larger, caplog)


def refund_with(**fields: Any) -> Callable[[str], Event]:
    def make(ride: str) -> Event:
        refund = refund_object(ride, f"outside-{ride}", 500, "succeeded") | fields
        refund["metadata"] = {"rideId": ride}
        return stripe_event("refund.updated", refund)

    return make


def charge_with(**fields: Any) -> Callable[[str], Event]:
    def make(ride: str) -> Event:
        event = charge_refunded(ride, [refund_object(ride, f"outside-{ride}", 500, "succeeded")])
        event["data"]["object"] |= fields
        return event

    return make


def dispute_with(**fields: Any) -> Callable[[str], Event]:
    return lambda ride: stripe_event(
        "charge.dispute.created", dispute(ride, f"dp_{ride}", "needs_response") | fields
    )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(refund_with(currency="eur"), id="refund-currency"),
        pytest.param(refund_with(currency=None), id="refund-without-currency"),
        pytest.param(refund_with(payment_intent="pi_someone_else"), id="refund-intent"),
        pytest.param(charge_with(amount=FARE * 2), id="charge-amount"),
        pytest.param(charge_with(currency="gbp"), id="charge-currency"),
        pytest.param(charge_with(payment_intent="pi_someone_else"), id="charge-intent"),
        pytest.param(dispute_with(currency="eur"), id="dispute-currency"),
        pytest.param(dispute_with(amount=FARE + 1), id="dispute-over-the-charge"),
    ],
)
async def test_money_back_for_another_charge_changes_nothing(
    client: Client,
    webhook_store: PaymentStore,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    make: Callable[[str], Event],
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    await refused_as_mismatched(client, webhook_store, ride, make(ride), caplog)
