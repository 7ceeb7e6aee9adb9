"""Attempts without I/O: the key and metadata of each attempt's session, the simulator's
refusal to take a payment past a session's `expires_at`, and the new link of an expired ride
among what a rider registering later is sent."""

from __future__ import annotations

import pytest

from devstack.stripe_simulator import SimulatorConfig
from devstack.stripe_simulator.checkout import (
    Action,
    SessionNotOpenError,
    apply_action,
    create_session,
)
from devstack.stripe_simulator.state import SimulatorState
from shared import messages
from shared.bus import StoredMessage, still_relevant
from shared.stripe_gateway import CheckoutRequest
from tests.helpers import status_update


def request(attempt: int) -> CheckoutRequest:
    return CheckoutRequest("r1", "u1", 2550, "usd", "https://ok", "https://no", attempt=attempt)


def test_the_first_attempt_keeps_the_key_rides_always_had() -> None:
    assert request(1).idempotency_key == "checkout-r1"
    assert request(2).idempotency_key == "checkout-r1-2"
    assert request(17).idempotency_key == "checkout-r1-17"


def test_sessions_and_intents_carry_their_attempt() -> None:
    params = request(2).params()
    assert params["metadata"] == {"rideId": "r1", "userId": "u1", "attempt": "2"}
    assert params["payment_intent_data"]["metadata"] == params["metadata"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session_params(expires_at: int) -> dict[str, object]:
    return {
        "mode": "payment",
        "success_url": "https://ok",
        "cancel_url": "https://no",
        "expires_at": str(expires_at),
        "line_items": [
            {
                "quantity": "1",
                "price_data": {
                    "currency": "usd",
                    "unit_amount": "2550",
                    "product_data": {"name": "Ride r1"},
                },
            }
        ],
    }


@pytest.mark.parametrize("action", [Action.PAY, Action.DECLINE, Action.CANCEL])
def test_the_simulator_takes_no_payment_past_expires_at(action: Action) -> None:
    clock = Clock(1_800_000_000)
    state = SimulatorState(SimulatorConfig(), clock)
    session = create_session(
        session_params(1_800_000_060), public_base_url="http://sim", now=state.now()
    )
    clock.now += 60  # due, but the sweep that marks it expired has not run yet
    with pytest.raises(SessionNotOpenError) as refusal:
        apply_action(state, session, action)
    assert refusal.value.status == "expired"
    assert apply_action(state, session, Action.EXPIRE)[-1][0] == "checkout.session.expired"


def test_a_rider_registering_later_gets_the_new_link_of_an_expired_ride() -> None:
    history = [
        StoredMessage("1-0", messages.payment_url("r1", "https://pay/1", attempt=1)),
        StoredMessage("2-0", status_update("r1", "expired", "cs_1")),
        StoredMessage("3-0", messages.payment_url("r1", "https://pay/2", attempt=2)),
        StoredMessage("4-0", messages.payment_url("gone", "https://pay/g")),
        StoredMessage("5-0", status_update("gone", "expired", "cs_g")),
    ]
    assert [s.id for s in still_relevant(history)] == ["2-0", "3-0", "5-0"]
