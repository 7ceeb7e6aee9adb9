"""What a Stripe event means for a payment: pure translation, no I/O.

Checkout Session events are matched by session id; PaymentIntent events by the `rideId` and
`attempt` metadata set on the PaymentIntent, falling back to the stored PaymentIntent id. The
selectors find the ride only while the event is about its current attempt; `session_id` and
`attempt` let the use case place an event about an earlier one. What the event says was
charged (`charged`) is held against the ride before anything changes (matching.py).

Every field is checked as it is read (fields.py), and the body before it is parsed: UTF-8,
nested at most MAX_NESTING levels (a check linear in the body, shared/json_nesting.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.webhook.fields import (
    MalformedEvent as MalformedEvent,  # the webhook's callers catch it from here
)
from services.webhook.fields import (
    amount_of,
    attempt_of,
    currency_of,
    id_of,
    identifier,
    required_id,
    ride_id_of,
    stripe_id,
)
from shared.json_nesting import nested_deeper_than
from shared.model import PaymentStatus
from shared.store import attempt_selector

SESSION_EVENTS: dict[str, PaymentStatus] = {
    "checkout.session.completed": PaymentStatus.SUCCEEDED,  # `processing` when unpaid
    "checkout.session.async_payment_succeeded": PaymentStatus.SUCCEEDED,
    "checkout.session.async_payment_failed": PaymentStatus.FAILED,
    "checkout.session.expired": PaymentStatus.EXPIRED,
}
# What each says of a delayed payment method (a bank debit): the session completes unpaid and
# the ride is `processing` until the outcome arrives, days later.
ASYNC_PAYMENT_EVENTS: dict[str, PaymentStatus] = {
    "checkout.session.async_payment_succeeded": PaymentStatus.SUCCEEDED,
    "checkout.session.async_payment_failed": PaymentStatus.FAILED,
}
PAYMENT_INTENT_EVENTS: dict[str, PaymentStatus] = {
    "payment_intent.succeeded": PaymentStatus.SUCCEEDED,
    "payment_intent.payment_failed": PaymentStatus.FAILED,
    "payment_intent.canceled": PaymentStatus.CANCELED,
}
# Money going back: applied by refund_events.py.
REFUND_EVENT_TYPES = frozenset(
    {"charge.refunded", "refund.created", "refund.updated", "refund.failed"}
)
DISPUTE_EVENT_TYPES = frozenset({"charge.dispute.created", "charge.dispute.closed"})
HANDLED_TYPES = (
    frozenset(SESSION_EVENTS)
    | frozenset(PAYMENT_INTENT_EVENTS)
    | REFUND_EVENT_TYPES
    | DISPUTE_EVENT_TYPES
)
OTHER_TYPE_LABEL = "other"

# Stripe's events nest about 6 deep; json.loads recurses once per level.
MAX_NESTING = 64


@dataclass(frozen=True, slots=True)
class StripeEvent:
    id: str
    type: str
    resource: dict[str, Any]
    # The API version Stripe rendered it in (services/webhook/api_versions.py).
    api_version: str | None = None

    @classmethod
    def from_body(cls, payload: bytes) -> StripeEvent:
        """The event in a request body; any body that is not one raises MalformedEvent."""
        try:
            # Strictly: json.loads would let an encoded surrogate (ED A0 80) through.
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedEvent(f"body is not UTF-8: {error.reason}") from None
        if nested_deeper_than(payload, MAX_NESTING):
            raise MalformedEvent(f"body is nested more than {MAX_NESTING} levels deep")
        try:
            document = json.loads(text)
        except ValueError as error:  # also a number too long to convert
            raise MalformedEvent(f"body is not JSON: {error}") from None
        return cls.parse(document)

    @classmethod
    def parse(cls, document: object) -> StripeEvent:
        if not isinstance(document, dict):
            raise MalformedEvent("event must be a JSON object")
        event_id = stripe_id(document.get("id"), "id")
        event_type = stripe_id(document.get("type"), "type")
        data = document.get("data")
        if event_id is None:
            raise MalformedEvent("event has no id")
        if event_type is None:
            raise MalformedEvent("event has no type")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise MalformedEvent("event has no data.object")
        api_version = stripe_id(document.get("api_version"), "api_version")
        return cls(event_id, event_type, data["object"], api_version)


def metric_label(event_type: str) -> str:
    """The type as a metric label: the sender picks types, so only handled ones get their own."""
    return event_type if event_type in HANDLED_TYPES else OTHER_TYPE_LABEL


@dataclass(frozen=True, slots=True)
class Charged:
    """What an event says was charged (None where it does not say): the ride it changes must
    be of this amount and currency."""

    amount: int | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class PaymentUpdate:
    """The status an event asks for and the ways to find its payment, best first."""

    event_id: str
    event_type: str
    target: PaymentStatus
    selectors: list[dict[str, Any]]
    payment_intent_id: str | None
    ride_id: str | None
    session_id: str | None = None
    attempt: int | None = None  # from the metadata; sessions made before attempts carry none
    # None when the update is not an event's word but Stripe's answer to a question of ours
    # about the ride's own session (the reconciler): nothing to hold against the ride.
    charged: Charged | None = None
    # What it says of a delayed payment on the session (`processing`, `succeeded`, `failed`).
    async_payment: PaymentStatus | None = None


def interpret(event: StripeEvent) -> PaymentUpdate | None:
    """The update this event means, or None when it changes no status."""
    if event.type in SESSION_EVENTS:
        return _session_update(event)
    if event.type in PAYMENT_INTENT_EVENTS:
        return _payment_intent_update(event)
    return None


def _session_update(event: StripeEvent) -> PaymentUpdate | None:
    session = event.resource
    target, async_payment = SESSION_EVENTS[event.type], ASYNC_PAYMENT_EVENTS.get(event.type)
    if event.type == "checkout.session.completed":
        paid = session.get("payment_status")
        if paid == "unpaid":  # a delayed payment method: async_payment_* will follow
            target = async_payment = PaymentStatus.PROCESSING
        elif paid != "paid":
            return None  # `no_payment_required`: nothing was to be charged
    session_id = required_id(session, "id")
    ride_id = ride_id_of(session) or identifier(
        session.get("client_reference_id"), "data.object.client_reference_id"
    )
    selectors: list[dict[str, Any]] = [{"stripeSessionId": session_id}]
    if ride_id:
        # The consumer may have crashed after creating the session and before storing its id.
        selectors.append({"rideId": ride_id, "stripeSessionId": None})
    return PaymentUpdate(
        event_id=event.id,
        event_type=event.type,
        target=target,
        selectors=selectors,
        payment_intent_id=id_of(session, "payment_intent"),
        ride_id=ride_id,
        session_id=session_id,
        attempt=attempt_of(session),
        charged=Charged(amount_of(session, "amount_total"), currency_of(session)),
        async_payment=async_payment,
    )


def _payment_intent_update(event: StripeEvent) -> PaymentUpdate:
    intent = event.resource
    intent_id = required_id(intent, "id")
    ride_id = ride_id_of(intent)
    attempt = attempt_of(intent)
    selectors: list[dict[str, Any]] = (
        [{"rideId": ride_id, **attempt_selector(attempt or 1)}] if ride_id else []
    )
    selectors.append({"paymentIntentId": intent_id})
    return PaymentUpdate(
        event_id=event.id,
        event_type=event.type,
        target=PAYMENT_INTENT_EVENTS[event.type],
        selectors=selectors,
        payment_intent_id=intent_id,
        ride_id=ride_id,
        attempt=attempt,
        charged=Charged(amount_of(intent, "amount"), currency_of(intent)),
    )
