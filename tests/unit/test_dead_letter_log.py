"""The consumer's dead-letter log line names the ride when the refused event or refund request
named one."""

from __future__ import annotations

import json
import logging
from typing import cast

import pytest

from services.consumer.handler import RideEventHandler
from services.consumer.process import Outcome, PaymentCreator
from services.consumer.records import DeadLetter, IncomingRecord
from services.consumer.refund_handler import RefundRequestHandler
from services.consumer.refunds import RefundIssuer


async def dead_letter_log(
    value: bytes, caplog: pytest.LogCaptureFixture, *, refund: bool = False
) -> logging.LogRecord:
    sent: list[DeadLetter] = []

    async def send(letter: DeadLetter) -> None:
        sent.append(letter)

    # Invalid events and requests never reach the creator or the issuer.
    if refund:
        handler: RideEventHandler | RefundRequestHandler = RefundRequestHandler(
            cast(RefundIssuer, object()), send
        )
        record = IncomingRecord("refund-requests", 0, 7, b"ride-44", value, [])
    else:
        handler = RideEventHandler(cast(PaymentCreator, object()), send)
        record = IncomingRecord("payment-events", 0, 7, b"u1", value, [])
    with caplog.at_level(logging.WARNING, logger="services.consumer.handler"):
        assert await handler.handle(record) is Outcome.DEAD_LETTERED
    assert len(sent) == 1
    kind = "refund request" if refund else "ride event"
    [line] = [r for r in caplog.records if r.getMessage().startswith(f"{kind} sent")]
    return line


@pytest.mark.parametrize("fare", ["abc", "-5", "0", None])
async def test_an_invalid_fare_is_logged_with_the_events_ride_id(
    fare: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    value = json.dumps({"rideId": "ride-42", "userId": "u1", "fare": fare}).encode()
    line = await dead_letter_log(value, caplog)
    assert line.__dict__["rideId"] == "ride-42"


async def test_an_empty_user_is_logged_with_the_events_ride_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    value = json.dumps({"rideId": "ride-43", "userId": "", "fare": "5"}).encode()
    assert (await dead_letter_log(value, caplog)).__dict__["rideId"] == "ride-43"


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[1, 2]", b'{"rideId": 12, "fare": "1"}', b'{"rideId": ""}', b"[" * 5000],
)
async def test_without_a_usable_ride_id_the_log_says_none(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await dead_letter_log(value, caplog)).__dict__["rideId"] is None


@pytest.mark.parametrize("amount", ["abc", "-5", "0", True])
async def test_a_refund_request_with_a_bad_amount_is_logged_with_its_ride_id(
    amount: object, caplog: pytest.LogCaptureFixture
) -> None:
    value = json.dumps({"refundId": "rf-1", "rideId": "ride-44", "amount": amount}).encode()
    line = await dead_letter_log(value, caplog, refund=True)
    assert line.__dict__["rideId"] == "ride-44"
