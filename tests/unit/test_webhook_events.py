from __future__ import annotations

from typing import Any

import pytest

from services.webhook.events import Charged, MalformedEvent, StripeEvent, interpret
from services.webhook.fields import MAX_AMOUNT
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


def test_completed_but_unpaid_is_a_delayed_payment_on_its_way() -> None:
    unpaid = {**SESSION, "status": "complete", "payment_status": "unpaid"}
    update = interpret(event("checkout.session.completed", unpaid))
    assert update is not None
    assert (update.target, update.async_payment) == (PaymentStatus.PROCESSING,) * 2


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("checkout.session.async_payment_succeeded", PaymentStatus.SUCCEEDED),
        ("checkout.session.async_payment_failed", PaymentStatus.FAILED),
    ],
)
def test_a_delayed_payments_outcome_is_said_of_its_session(
    kind: str, outcome: PaymentStatus
) -> None:
    update = interpret(event(kind, SESSION))
    assert update is not None and (update.target, update.async_payment) == (outcome, outcome)
    paid = interpret(event("checkout.session.completed", SESSION))
    assert paid is not None and paid.async_payment is None


def test_completed_with_nothing_to_pay_changes_no_status() -> None:
    free = {**SESSION, "payment_status": "no_payment_required"}
    assert interpret(event("checkout.session.completed", free)) is None


def test_an_events_api_version_is_read() -> None:
    document = {"id": "evt_1", "type": "x", "api_version": "2026-10-28.endive"}
    parsed = StripeEvent.parse(document | {"data": {"object": {}}})
    assert parsed.api_version == "2026-10-28.endive"
    assert StripeEvent.parse({"id": "e", "type": "x", "data": {"object": {}}}).api_version is None


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


def test_what_an_event_says_was_charged() -> None:
    session = {**SESSION, "amount_total": 2550, "currency": "USD"}
    update = interpret(event("checkout.session.completed", session))
    assert update is not None and update.charged == Charged(2550, "usd")
    intent = interpret(event("payment_intent.succeeded", {**INTENT, "amount": 99}))
    assert intent is not None and intent.charged == Charged(99, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", -1),
        ("amount", MAX_AMOUNT + 1),
        ("amount", 2**70),
        ("amount", 1.5),
        ("amount", True),
        ("amount", "2550"),
        ("currency", "us"),
        ("currency", "usd1"),
        ("currency", "€$£"),
        ("currency", 840),
        ("id", "pi_\ud800"),
        ("id", "pi_" + "x" * 253),
        ("id", "pi_ü"),
        ("id", ""),
        ("id", 7),
        ("metadata", {"rideId": "\ud800"}),
        ("metadata", {"rideId": "r" * 201}),
        ("metadata", {"rideId": "ride\x00"}),
    ],
)
def test_a_field_stripe_never_sends_is_malformed(field: str, value: object) -> None:
    with pytest.raises(MalformedEvent, match=field):
        interpret(event("payment_intent.succeeded", {**INTENT, field: value}))


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt_\xed\xa0\x80", "type": "x", "data": {"object": {}}}',
        b'{"id": "evt_\xff", "type": "x", "data": {"object": {}}}',
        b'{"id": "evt_\\ud800", "type": "x", "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "x\\udc00", "data": {"object": {}}}',
    ],
)
def test_a_body_that_is_not_utf_8_or_an_id_that_is_not_unicode_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        StripeEvent.from_body(body)
