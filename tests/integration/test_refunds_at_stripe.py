"""Refunds against the Stripe simulator and real MongoDB: refunds whose webhook was lost are
settled by asking Stripe (the reconciler), and a refund Stripe refuses releases its amount."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest

from services.consumer.refunds import RefundIssuer
from services.webhook.refund_reconciliation import RefundSettler
from shared.outbox import OutboxRelay
from shared.refund_model import RefundRefused, RefundRequest
from shared.refunds import RefundBook
from shared.store import PaymentStore
from shared.stripe_gateway import CheckoutRequest, StripeGateway
from tests.e2e.test_refund_kills import paid_record
from tests.integration.test_reconciliation import gateway, relay, simulator

__all__ = ["gateway", "relay", "simulator"]  # the fixtures this module uses


async def paid_ride(simulator: str, gateway: StripeGateway, store: PaymentStore, ride: str) -> None:
    session = await gateway.create_checkout_session(
        CheckoutRequest(ride, f"user-{ride}", 2000, "usd", "http://s", "http://c")
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{simulator}/_sim/sessions/{session.id}/pay") as answer:
            assert answer.status == 200
        settings = {"settle_after_ms": None}  # refunds stay pending until told
        async with http.post(f"{simulator}/_sim/refunds/settings", json=settings) as answer:
            assert answer.status == 200
    paid = await gateway.retrieve_checkout_session(session.id)
    await store.collection.insert_one(paid_record(ride, session.id, paid.payment_intent_id))


async def settle_at_stripe(simulator: str, stripe_refund_id: str, outcome: str) -> None:
    """The refund ends at Stripe; its webhook goes nowhere (the simulator has no endpoint)."""
    async with aiohttp.ClientSession() as http:
        url = f"{simulator}/_sim/refunds/{stripe_refund_id}/{outcome}"
        async with http.post(url) as answer:
            assert answer.status == 200, await answer.text()


async def test_refunds_stuck_pending_are_settled_by_asking_stripe(
    simulator: str, gateway: StripeGateway, store: PaymentStore, relay: OutboxRelay, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(simulator, gateway, store, ride)
    book = RefundBook(store)
    issuer = RefundIssuer(book, gateway)
    await issuer.refund(RefundRequest("won", ride, Decimal("12.00"), None))
    await issuer.refund(RefundRequest("lost", ride, None, None))  # the remaining 8.00
    pending = {r["refundId"]: r for r in (await store.find_document(ride) or {})["refunds"]}
    assert {r["status"] for r in pending.values()} == {"pending"}
    await settle_at_stripe(simulator, pending["won"]["stripeRefundId"], "succeed")
    await settle_at_stripe(simulator, pending["lost"]["stripeRefundId"], "fail")

    settler = RefundSettler(book, gateway, relay.publish_soon, settle_after_s=0, batch=10)
    assert await settler.run_once() == 2
    assert await settler.run_once() == 0
    document = await store.find_document(ride)
    assert document is not None
    assert (document["status"], document["amountRefunded"]) == ("partially_refunded", 1200)
    assert {r["refundId"]: r["status"] for r in document["refunds"]} == {
        "won": "succeeded",
        "lost": "failed",
    }
    assert document["history"][-1]["source"] == "reconciler"


async def test_a_refund_stripe_refuses_releases_its_reservation(
    simulator: str, gateway: StripeGateway, store: PaymentStore, unique: str
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(simulator, gateway, store, ride)
    issuer = RefundIssuer(RefundBook(store), gateway)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{simulator}/_sim/faults", json={"status": 400}) as answer:
            assert answer.status == 200  # the next call is refused for good
    with pytest.raises(RefundRefused, match="HTTP 400"):
        await issuer.refund(RefundRequest("refused", ride, None, None))
    with pytest.raises(RefundRefused, match="refund failed"):  # a redelivery says so again
        await issuer.refund(RefundRequest("refused", ride, None, None))
    await issuer.refund(RefundRequest("next", ride, None, None))  # the whole charge is free
    document = await store.find_document(ride)
    assert document is not None
    assert [(r["refundId"], r["status"], r["amount"]) for r in document["refunds"]] == [
        ("refused", "failed", 2000),
        ("next", "pending", 2000),
    ]
