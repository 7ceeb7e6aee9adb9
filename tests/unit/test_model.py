from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.model import (
    MAX_EVENT_BYTES,
    InvalidRideEvent,
    PaymentStatus,
    can_transition,
    parse_ride_event,
    statuses_that_may_become,
    to_minor_units,
)


def event(**fields: object) -> bytes:
    return json.dumps(
        {"rideId": "ride123", "userId": "user456", "fare": "25.50", **fields}
    ).encode()


def test_parses_the_contract_example() -> None:
    parsed = parse_ride_event(event())
    assert (parsed.ride_id, parsed.user_id, parsed.fare) == ("ride123", "user456", Decimal("25.50"))


def test_fare_may_be_a_json_number_without_float_error() -> None:
    assert parse_ride_event(b'{"rideId":"r","userId":"u","fare":0.1}').fare == Decimal("0.1")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (event(rideId=""), "rideId must be a non-empty string"),
        (event(rideId="   "), "rideId must be a non-empty string"),
        (event(userId=None), "userId must be a non-empty string"),
        (event(userId=7), "userId must be a non-empty string"),
        (event(rideId="r" * 201), "longer than"),
        (event(rideId="a\nb"), "control characters"),
        (event(fare="abc"), "not a decimal number"),
        (event(fare="-1"), "finite positive"),
        (event(fare="0"), "finite positive"),
        (event(fare="NaN"), "finite positive"),
        (event(fare="Infinity"), "finite positive"),
        (event(fare=True), "decimal string or a number"),
        (event(fare=None), "decimal string or a number"),
        (b'{"rideId":"r","userId":"u","fare":NaN}', "decimal string or a number"),
        (
            b'{"rideId":"r","userId":"u","fare":"1","pad":"' + b"x" * MAX_EVENT_BYTES + b'"}',
            "limit",
        ),
    ],
)
def test_invalid_events_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRideEvent, match=reason):
        parse_ride_event(raw)


@pytest.mark.parametrize(
    ("fare", "currency", "minor"),
    [
        ("25.50", "usd", 2550),
        ("25.505", "usd", 2551),  # half-up, not banker's rounding
        ("25.515", "usd", 2552),
        ("25.5049999999", "usd", 2550),
        ("0.005", "usd", 1),
        ("1234.5", "jpy", 1235),
        ("1.2345", "kwd", 1235),
        ("1E+2", "eur", 10000),
    ],
)
def test_fare_to_minor_units_rounds_half_up(fare: str, currency: str, minor: int) -> None:
    assert to_minor_units(Decimal(fare), currency) == minor


@pytest.mark.parametrize("fare", ["0.004", "1000000", "1e400"])
def test_unchargeable_fares_are_refused(fare: str) -> None:
    with pytest.raises(InvalidRideEvent):
        to_minor_units(Decimal(fare), "usd")


def test_final_statuses_never_change() -> None:
    for final in (PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED, PaymentStatus.EXPIRED):
        assert final.is_final
        assert not any(can_transition(final, target) for target in PaymentStatus)


def test_failed_can_still_succeed_but_not_repeat() -> None:
    assert can_transition(PaymentStatus.FAILED, PaymentStatus.SUCCEEDED)
    assert not can_transition(PaymentStatus.FAILED, PaymentStatus.FAILED)
    assert not can_transition(PaymentStatus.PENDING, PaymentStatus.PENDING)


def test_update_filter_lists_the_statuses_a_target_may_follow() -> None:
    assert set(statuses_that_may_become(PaymentStatus.SUCCEEDED)) == {
        PaymentStatus.PENDING,
        PaymentStatus.FAILED,
    }
    assert statuses_that_may_become(PaymentStatus.FAILED) == [PaymentStatus.PENDING]
