"""The simulator's refunds and disputes, driven by the real `stripe` SDK, with signed events."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.integration.test_stripe_simulator import (
    Receiver,
    Sim,
    client,
    create,
    make_client,
    receiver,
    ride_params,
    sim,
)

__all__ = ["client", "make_client", "receiver", "sim"]  # the fixtures this module uses

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


async def paid_intent(sim: Sim, client: stripe.StripeClient, receiver: Receiver) -> str:
    session = await create(client, ride_params(amount=2000))
    await sim.act(session.id, "pay")
    paid = ["payment_intent.succeeded", "checkout.session.completed"]
    assert await receiver.next_types(2) == paid
    return await intent_of(client, session.id)


async def intent_of(client: stripe.StripeClient, session_id: str) -> str:
    intent = (await client.v1.checkout.sessions.retrieve_async(session_id)).payment_intent
    assert isinstance(intent, str)
    return intent


async def refund(
    client: stripe.StripeClient, intent: str, key: str, **params: Any
) -> stripe.Refund:
    return await client.v1.refunds.create_async(
        params={"payment_intent": intent, **params},  # type: ignore[arg-type]
        options={"idempotency_key": key},
    )


async def test_a_refund_is_pending_then_succeeds_with_signed_events(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    created = await refund(
        client, intent, "refund-a", amount=500, metadata={"rideId": "r1", "refundId": "a"}
    )
    assert (created.status, created.amount) == ("pending", 500)
    assert created.metadata is not None and created.metadata["refundId"] == "a"
    assert await receiver.next_types(3) == ["refund.created", "refund.updated", "charge.refunded"]
    assert (await client.v1.refunds.retrieve_async(created.id)).status == "succeeded"
    again = await refund(
        client, intent, "refund-a", amount=500, metadata={"rideId": "r1", "refundId": "a"}
    )
    assert again.id == created.id  # the idempotency key answers a repeat with the same refund


async def test_amount_checks_are_stripes(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        await refund(client, intent, "k1", amount=2001)
    assert too_large.value.code == "amount_too_large"
    rest = await refund(client, intent, "k2")  # no amount: all that remains
    assert rest.amount == 2000
    with pytest.raises(stripe.InvalidRequestError) as refunded:
        await refund(client, intent, "k3", amount=1)
    assert refunded.value.code == "charge_already_refunded"
    unpaid = await create(client, ride_params("r2"))
    await sim.act(unpaid.id, "decline")
    declined = await intent_of(client, unpaid.id)
    with pytest.raises(stripe.InvalidRequestError) as not_paid:
        await refund(client, declined, "k4")
    assert not_paid.value.code == "charge_not_refundable"


async def test_a_refund_fails_on_demand_and_gives_its_amount_back(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    assert (await sim.call("POST", "/_sim/refunds/settings", {"settle_after_ms": None}))[0] == 200
    held = await refund(client, intent, "k1", amount=2000)
    assert await receiver.next_types(1) == ["refund.created"]
    status, body = await sim.call("POST", f"/_sim/refunds/{held.id}/fail")
    assert status == 200 and body["refund"]["status"] == "failed"
    assert await receiver.next_types(1) == ["refund.failed"]
    assert (await refund(client, intent, "k2", amount=2000)).status == "pending"


async def test_a_dispute_opens_and_closes_on_a_paid_session(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    status, _ = await sim.call("POST", "/_sim/disputes", {"session": session.id})
    assert status == 400  # not paid
    await sim.act(session.id, "pay")
    await receiver.next_types(2)
    status, opened = await sim.call("POST", "/_sim/disputes", {"session": session.id})
    assert status == 200, opened
    created = await receiver.next_event()
    assert created.type == "charge.dispute.created"
    assert created.data.object["payment_intent"] == opened["dispute"]["payment_intent"]
    dispute = opened["dispute"]["id"]
    assert (await sim.call("POST", f"/_sim/disputes/{dispute}/close", {"outcome": "won"}))[0] == 200
    closed = await receiver.next_event()
    assert (closed.type, closed.data.object["status"]) == ("charge.dispute.closed", "won")
