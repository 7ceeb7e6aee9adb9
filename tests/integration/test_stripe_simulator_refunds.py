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


async def test_a_card_refund_succeeds_in_the_create_answer(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    created = await refund(
        client, intent, "refund-a", amount=500, metadata={"rideId": "r1", "refundId": "a"}
    )
    assert (created.status, created.amount) == ("succeeded", 500)
    assert created.metadata is not None and created.metadata["refundId"] == "a"
    made, refunded = await receiver.next_event(), await receiver.next_event()
    assert (made.type, made.data.object["status"]) == ("refund.created", "succeeded")
    assert refunded.type == "charge.refunded"
    charge = refunded.data.object
    assert (charge["amount_refunded"], charge["refunded"]) == (500, False)
    assert "refunds" not in charge  # since API 2022-11-15, only when expanded; never in events
    assert (await client.v1.refunds.retrieve_async(created.id)).status == "succeeded"
    again = await refund(
        client, intent, "refund-a", amount=500, metadata={"rideId": "r1", "refundId": "a"}
    )
    assert again.id == created.id  # the idempotency key answers a repeat with the same refund


async def test_a_refund_pending_until_told_then_succeeds(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    assert (await sim.call("POST", "/_sim/refunds/settings", {"settle_after_ms": None}))[0] == 200
    created = await refund(client, intent, "refund-p", amount=2000)
    assert created.status == "pending"
    assert await receiver.next_types(1) == ["refund.created"]
    status, body = await sim.call("POST", f"/_sim/refunds/{created.id}/succeed")
    assert status == 200 and body["refund"]["status"] == "succeeded"
    updated, refunded = await receiver.next_event(), await receiver.next_event()
    assert updated.type == "refund.updated"
    assert updated.data.previous_attributes is not None
    assert updated.data.previous_attributes["status"] == "pending"
    assert (refunded.type, refunded.data.object["refunded"]) == ("charge.refunded", True)


async def test_a_refund_that_succeeded_can_fail_later_and_gives_its_amount_back(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    assert (await sim.call("POST", "/_sim/refunds/settings", {"fail_next": 1}))[0] == 200
    created = await refund(client, intent, "refund-f", amount=2000)
    assert created.status == "succeeded"
    assert await receiver.next_types(2) == ["refund.created", "charge.refunded"]
    updated, failed = await receiver.next_event(), await receiver.next_event()
    assert updated.type == "refund.updated" and updated.data.previous_attributes is not None
    assert updated.data.previous_attributes["status"] == "succeeded"
    assert (failed.type, failed.data.object["status"]) == ("refund.failed", "failed")
    assert failed.data.object["failure_reason"]
    charge = await client.v1.charges.retrieve_async(str(created.charge))
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    assert (await refund(client, intent, "refund-g", amount=2000)).status == "succeeded"


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


async def open_dispute(sim: Sim, session_id: str, *, inquiry: bool) -> dict[str, Any]:
    status, opened = await sim.call(
        "POST", "/_sim/disputes", {"session": session_id, "inquiry": inquiry}
    )
    assert status == 200, opened
    dispute: dict[str, Any] = opened["dispute"]
    return dispute


async def test_a_chargeback_takes_the_money_and_blocks_refunds_until_won(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = await paid_intent(sim, client, receiver)
    session = (await client.v1.checkout.sessions.list_async()).data[0]
    dispute = await open_dispute(sim, session.id, inquiry=False)
    assert (dispute["status"], dispute["is_charge_refundable"]) == ("needs_response", False)
    [withdrawal] = dispute["balance_transactions"]
    assert (withdrawal["amount"], withdrawal["reporting_category"]) == (-2000, "dispute")
    assert (await receiver.next_event()).type == "charge.dispute.created"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await refund(client, intent, "while-disputed")
    assert refused.value.code == "charge_disputed"

    status, body = await sim.call("POST", f"/_sim/disputes/{dispute['id']}/evidence")
    assert status == 200 and body["dispute"]["status"] == "under_review"
    updated = await receiver.next_event()
    assert updated.type == "charge.dispute.updated" and updated.data.previous_attributes
    assert updated.data.previous_attributes["status"] == "needs_response"
    path = f"/_sim/disputes/{dispute['id']}/close"
    status, wrong = await sim.call("POST", path, {"outcome": "warning_closed"})
    assert status == 400 and "won or lost" in wrong["error"]["message"]
    status, body = await sim.call("POST", path, {"outcome": "won"})
    assert status == 200
    assert [t["amount"] for t in body["dispute"]["balance_transactions"]] == [-2000, 2000]
    assert (await receiver.next_event()).data.object["status"] == "won"
    assert withdrawal["source"] == dispute["id"]
    assert (await client.v1.charges.retrieve_async(dispute["charge"])).disputed


async def test_an_inquiry_opens_takes_evidence_and_closes_without_moving_money(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    await paid_intent(sim, client, receiver)
    session = (await client.v1.checkout.sessions.list_async()).data[0]
    inquiry = await open_dispute(sim, session.id, inquiry=True)
    assert (inquiry["status"], inquiry["balance_transactions"]) == ("warning_needs_response", [])
    assert inquiry["payment_method_details"]["card"]["case_type"] == "inquiry"
    created = await receiver.next_event()
    assert (created.type, created.data.object["status"]) == (
        "charge.dispute.created",
        "warning_needs_response",
    )
    status, _ = await sim.call("POST", "/_sim/disputes", {"session": session.id})
    assert status == 400  # one dispute per charge
    assert (await sim.call("POST", f"/_sim/disputes/{inquiry['id']}/evidence"))[0] == 200
    updated = await receiver.next_event()
    assert updated.data.object["status"] == "warning_under_review"
    path = f"/_sim/disputes/{inquiry['id']}/close"
    assert (await sim.call("POST", path, {"outcome": "won"}))[0] == 400
    assert (await sim.call("POST", path, {"outcome": "warning_closed"}))[0] == 200
    closed = await receiver.next_event()
    assert (closed.type, closed.data.object["status"]) == (
        "charge.dispute.closed",
        "warning_closed",
    )
    assert (await sim.call("POST", path, {"outcome": "warning_closed"}))[0] == 400
    retrieved = await client.v1.disputes.retrieve_async(inquiry["id"])
    assert retrieved.status == "warning_closed"


async def test_the_checkout_page_opens_and_closes_disputes(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    await sim.act(session.id, "pay")
    await receiver.next_types(2)
    page = f"{sim.url}/checkout/{session.id}"
    async with sim.http.get(page) as response:
        html = await response.text()
    assert 'id="dispute-chargeback"' in html and 'id="dispute-inquiry"' in html
    async with sim.http.post(f"{page}/dispute/inquiry") as response:
        assert response.status == 200
        html = await response.text()
    assert '<span id="dispute-status">warning_needs_response</span>' in html
    assert 'id="dispute-evidence"' in html and 'id="dispute-warning_closed"' in html
    assert (await receiver.next_event()).type == "charge.dispute.created"
    [dispute] = (await sim.call("GET", "/_sim/disputes"))[1]["data"]
    async with sim.http.post(f"{page}/disputes/{dispute['id']}/warning_closed") as response:
        assert response.status == 200
        assert "warning_closed" in await response.text()
    assert (await receiver.next_event()).type == "charge.dispute.closed"
    async with sim.http.post(f"{page}/disputes/{dispute['id']}/won") as response:
        assert response.status == 409  # closed
