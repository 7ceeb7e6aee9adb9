from __future__ import annotations

from typing import Any

import pytest

from services.webhook.events import MalformedEvent, StripeEvent, interpret
from shared.model import PaymentStatus


def event(kind: str, resource: dict[str, Any]) -> StripeEvent:
    return StripeEvent.parse({"id": "evt_1", "type": kind, "data": {"object": resource}})


SESSION = {
    "id": "cs_1",
    "object": "checkout.session",
    "payment_status": "paid",
    "payment_intent": "pi_1",
    "client_reference_id": "ride-1",
    "metadata": {"rideId": "ride-1", "userId": "u"},
}
INTENT = {"id": "pi_1", "object": "payment_intent", "metadata": {"rideId": "ride-1", "userId": "u"}}


@pytest.mark.parametrize(
    ("kind", "resource", "status"),
    [
        ("checkout.session.completed", SESSION, PaymentStatus.SUCCEEDED),
        ("checkout.session.expired", SESSION, PaymentStatus.EXPIRED),
        ("checkout.session.async_payment_succeeded", SESSION, PaymentStatus.SUCCEEDED),
        ("checkout.session.async_payment_failed", SESSION, PaymentStatus.FAILED),
        ("payment_intent.succeeded", INTENT, PaymentStatus.SUCCEEDED),
        ("payment_intent.payment_failed", INTENT, PaymentStatus.FAILED),
        ("payment_intent.canceled", INTENT, PaymentStatus.CANCELED),
    ],
)
def test_each_handled_event_means_its_status(
    kind: str, resource: dict[str, Any], status: PaymentStatus
) -> None:
    update = interpret(event(kind, resource))
    assert update is not None
    assert update.target is status
    assert update.ride_id == "ride-1"
    assert update.payment_intent_id == "pi_1"


def test_sessions_are_found_by_id_then_by_ride_without_a_session() -> None:
    update = interpret(event("checkout.session.completed", SESSION))
    assert update is not None
    assert update.selectors == [
        {"stripeSessionId": "cs_1"},
        {"rideId": "ride-1", "stripeSessionId": None},
    ]


def test_payment_intents_are_found_by_metadata_then_by_stored_id() -> None:
    update = interpret(event("payment_intent.succeeded", INTENT))
    assert update is not None
    # Without `attempt` in the metadata (sessions made before attempts) it is the first.
    assert update.selectors == [
        {"rideId": "ride-1", "attempt": {"$in": [1, None]}},
        {"paymentIntentId": "pi_1"},
    ]
    bare = interpret(event("payment_intent.succeeded", {"id": "pi_2"}))
    assert bare is not None and bare.selectors == [{"paymentIntentId": "pi_2"}]


def test_an_intent_is_matched_to_its_attempt_by_metadata() -> None:
    metadata = {"rideId": "ride-1", "attempt": "3"}
    update = interpret(event("payment_intent.payment_failed", {**INTENT, "metadata": metadata}))
    assert update is not None and update.attempt == 3
    assert update.selectors[0] == {"rideId": "ride-1", "attempt": 3}


@pytest.mark.parametrize("attempt", ["", "0", "x", "-1", "1" * 7, "²"])
def test_an_attempt_that_is_not_a_small_number_is_unknown(attempt: str) -> None:
    metadata = {"rideId": "ride-1", "attempt": attempt}
    update = interpret(event("checkout.session.expired", {**SESSION, "metadata": metadata}))
    assert update is not None and update.attempt is None and update.session_id == "cs_1"


def test_completed_but_unpaid_is_not_success() -> None:
    unpaid = {**SESSION, "payment_status": "unpaid"}
    assert interpret(event("checkout.session.completed", unpaid)) is None


def test_other_event_types_change_nothing() -> None:
    assert interpret(event("customer.created", {"id": "cus_1"})) is None


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"type": "x", "data": {"object": {}}},
        {"id": "evt", "data": {"object": {}}},
        {"id": "evt", "type": "x"},
        {"id": "evt", "type": "x", "data": {"object": "nope"}},
    ],
)
def test_malformed_events_are_refused(document: object) -> None:
    with pytest.raises(MalformedEvent):
        StripeEvent.parse(document)


def test_a_session_event_without_an_id_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match="id"):
        interpret(event("checkout.session.expired", {"object": "checkout.session"}))
