"""What a Stripe event means for a payment: pure translation, no I/O.

Checkout Session events are matched by session id; PaymentIntent events by the `rideId` and
`attempt` metadata set on the PaymentIntent, falling back to the stored PaymentIntent id. The
selectors find the ride only while the event is about its current attempt; `session_id` and
`attempt` let the use case place an event about an earlier one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.model import PaymentStatus
from shared.store import attempt_selector

SESSION_EVENTS: dict[str, PaymentStatus] = {
    "checkout.session.completed": PaymentStatus.SUCCEEDED,
    "checkout.session.async_payment_succeeded": PaymentStatus.SUCCEEDED,
    "checkout.session.async_payment_failed": PaymentStatus.FAILED,
    "checkout.session.expired": PaymentStatus.EXPIRED,
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
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


class MalformedEvent(ValueError):
    """A correctly signed body that is not a Stripe event of the expected shape."""


@dataclass(frozen=True, slots=True)
class StripeEvent:
    id: str
    type: str
    resource: dict[str, Any]

    @classmethod
    def from_body(cls, payload: bytes) -> StripeEvent:
        """The event in a request body; any body that is not one raises MalformedEvent."""
        if not _nesting_within(payload, MAX_NESTING):
            raise MalformedEvent(f"body is nested more than {MAX_NESTING} levels deep")
        try:
            document = json.loads(payload)
        except ValueError as error:  # also a number too long to convert
            raise MalformedEvent(f"body is not JSON: {error}") from None
        return cls.parse(document)

    @classmethod
    def parse(cls, document: object) -> StripeEvent:
        if not isinstance(document, dict):
            raise MalformedEvent("event must be a JSON object")
        event_id, event_type = document.get("id"), document.get("type")
        data = document.get("data")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedEvent("event has no id")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedEvent("event has no type")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise MalformedEvent("event has no data.object")
        return cls(event_id, event_type, data["object"])


def _nesting_within(payload: bytes, limit: int) -> bool:
    """Whether the JSON text opens at most `limit` arrays or objects inside one another."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', payload)):
        depth += 1 if bracket[0] in b"[{" else -1
        if depth > limit:
            return False
    return True


def metric_label(event_type: str) -> str:
    """The type as a metric label: the sender picks types, so only handled ones get their own."""
    return event_type if event_type in HANDLED_TYPES else OTHER_TYPE_LABEL


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


def interpret(event: StripeEvent) -> PaymentUpdate | None:
    """The update this event means, or None when it changes no status."""
    if event.type in SESSION_EVENTS:
        return _session_update(event)
    if event.type in PAYMENT_INTENT_EVENTS:
        return _payment_intent_update(event)
    return None


def _session_update(event: StripeEvent) -> PaymentUpdate | None:
    session = event.resource
    # Completed but unpaid means a delayed payment method: async_payment_* will follow.
    if event.type == "checkout.session.completed" and session.get("payment_status") != "paid":
        return None
    session_id = _required_string(session, "id")
    ride_id = _ride_id(session) or _string(session.get("client_reference_id"))
    selectors: list[dict[str, Any]] = [{"stripeSessionId": session_id}]
    if ride_id:
        # The consumer may have crashed after creating the session and before storing its id.
        selectors.append({"rideId": ride_id, "stripeSessionId": None})
    return PaymentUpdate(
        event_id=event.id,
        event_type=event.type,
        target=SESSION_EVENTS[event.type],
        selectors=selectors,
        payment_intent_id=_string(session.get("payment_intent")),
        ride_id=ride_id,
        session_id=session_id,
        attempt=_attempt(session),
    )


def _payment_intent_update(event: StripeEvent) -> PaymentUpdate:
    intent = event.resource
    intent_id = _required_string(intent, "id")
    ride_id = _ride_id(intent)
    attempt = _attempt(intent)
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
    )


def _ride_id(stripe_object: dict[str, Any]) -> str | None:
    metadata = stripe_object.get("metadata")
    return _string(metadata.get("rideId")) if isinstance(metadata, dict) else None


def _attempt(stripe_object: dict[str, Any]) -> int | None:
    metadata = stripe_object.get("metadata")
    value = metadata.get("attempt") if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        return int(value) or None
    return None


def _string(value: object) -> str | None:
    if isinstance(value, dict):  # an expanded object instead of its id
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _required_string(stripe_object: dict[str, Any], key: str) -> str:
    value = _string(stripe_object.get(key))
    if value is None:
        raise MalformedEvent(f"data.object.{key} is missing")
    return value
