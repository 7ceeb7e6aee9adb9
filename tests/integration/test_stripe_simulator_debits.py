"""Checkout with a bank debit, as Stripe does it: the session completes `unpaid` while the
PaymentIntent is `processing`, and days later `checkout.session.async_payment_succeeded` or
`_failed` says how it went. A completed session is never paid again."""

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


async def debited(sim: Sim, client: stripe.StripeClient, receiver: Receiver) -> str:
    """A session completed by bank debit, its two events checked; its id."""
    session = await create(client, ride_params())
    assert session.payment_method_types == ["card", "us_bank_account"]
    await sim.act(session.id, "debit")
    processing, completed = await receiver.next_event(), await receiver.next_event()
    assert processing.type == "payment_intent.processing"
    intent = processing.data.object
    assert intent["status"] == "processing" and intent["latest_charge"].startswith("ch_")
    assert completed.type == "checkout.session.completed"
    done = completed.data.object
    assert (done["status"], done["payment_status"], done["url"]) == ("complete", "unpaid", None)
    assert done["payment_intent"] == intent["id"]
    return session.id


async def intent_of(client: stripe.StripeClient, session_id: str) -> stripe.PaymentIntent:
    session = await client.v1.checkout.sessions.retrieve_async(session_id)
    return await client.v1.payment_intents.retrieve_async(str(session.payment_intent))


async def test_a_debit_completes_unpaid_then_succeeds_days_later(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session_id = await debited(sim, client, receiver)
    charge_id = str((await intent_of(client, session_id)).latest_charge)
    assert (await client.v1.charges.retrieve_async(charge_id)).status == "pending"

    await sim.act(session_id, "debit_succeeds")
    succeeded, paid = await receiver.next_event(), await receiver.next_event()
    assert (succeeded.type, succeeded.data.object["status"]) == (
        "payment_intent.succeeded",
        "succeeded",
    )
    assert paid.type == "checkout.session.async_payment_succeeded"
    assert (paid.data.object["status"], paid.data.object["payment_status"]) == ("complete", "paid")
    charge = await client.v1.charges.retrieve_async(charge_id)
    assert (charge.status, charge.paid) == ("succeeded", True)
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.type == "us_bank_account"


async def test_a_failed_debit_leaves_the_session_complete_and_never_payable_again(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session_id = await debited(sim, client, receiver)
    await sim.act(session_id, "debit_fails")
    failed, async_failed = await receiver.next_event(), await receiver.next_event()
    assert failed.type == "payment_intent.payment_failed"
    intent = failed.data.object
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == "insufficient_funds"
    assert async_failed.type == "checkout.session.async_payment_failed"
    assert async_failed.data.object["payment_status"] == "unpaid"

    for action in ("pay", "debit", "debit_succeeds", "debit_fails"):
        status, body = await sim.call("POST", f"/_sim/sessions/{session_id}/{action}")
        assert status == 409, (action, body)
    session = await client.v1.checkout.sessions.retrieve_async(session_id)
    assert (session.status, session.payment_status) == ("complete", "unpaid")
    async with sim.http.post(f"{sim.url}/checkout/{session_id}/pay") as response:
        assert response.status == 409


@pytest.mark.parametrize("before", ["open", "paid by card"])
async def test_a_debit_outcome_needs_a_debit_in_progress(
    sim: Sim, client: stripe.StripeClient, before: str
) -> None:
    session = await create(client, ride_params())
    if before == "paid by card":
        await sim.act(session.id, "pay", deliver=False)
    status, body = await sim.call("POST", f"/_sim/sessions/{session.id}/debit_succeeds")
    assert (status, body["error"]["code"]) == (409, "no_bank_debit")


async def test_a_currency_without_a_bank_debit_offers_cards_only(
    sim: Sim, client: stripe.StripeClient
) -> None:
    params: dict[str, Any] = ride_params(amount=500)
    params["line_items"][0]["price_data"]["currency"] = "jpy"
    session = await create(client, params)
    assert session.payment_method_types == ["card"]
    async with sim.http.get(f"{sim.url}/checkout/{session.id}") as response:
        html = await response.text()
    assert 'id="pay"' in html and 'id="debit"' not in html
    status, body = await sim.call("POST", f"/_sim/sessions/{session.id}/debit")
    assert (status, body["error"]["code"]) == (409, "no_bank_debit")


async def test_the_page_takes_a_debit_and_offers_what_the_bank_says_later(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    page = f"{sim.url}/checkout/{session.id}"
    async with sim.http.get(page) as response:
        assert 'id="debit"' in await response.text()
    async with sim.http.post(f"{page}/debit", allow_redirects=False) as response:
        assert response.status == 303  # back to the merchant, as after a card payment
        assert response.headers["Location"] == "http://localhost:3000/success"
    assert await receiver.next_types(2) == [
        "payment_intent.processing",
        "checkout.session.completed",
    ]
    async with sim.http.get(page) as response:
        html = await response.text()
    assert 'id="debit_succeeds"' in html and 'id="debit_fails"' in html
    async with sim.http.post(f"{page}/debit_succeeds") as response:
        assert response.status == 200
        assert '<span id="payment_status">paid</span>' in await response.text()
    assert await receiver.next_types(2) == [
        "payment_intent.succeeded",
        "checkout.session.async_payment_succeeded",
    ]


async def test_a_debit_paid_refund_stays_pending_a_while(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session_id = await debited(sim, client, receiver)
    await sim.act(session_id, "debit_succeeds")
    await receiver.next_types(2)
    intent = await intent_of(client, session_id)
    created = await client.v1.refunds.create_async(params={"payment_intent": intent.id})
    assert created.status == "pending"  # unlike a card's, a bank debit's refund takes days
    assert await receiver.next_types(3) == ["refund.created", "refund.updated", "charge.refunded"]
