"""The consumer's dead-letter log line names the ride when the refused event named one."""

from __future__ import annotations

import json
import logging
from typing import cast

import pytest

from services.consumer.handler import RideEventHandler
from services.consumer.process import Outcome, PaymentCreator
from services.consumer.records import DeadLetter, IncomingRecord


async def dead_letter_log(value: bytes, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    sent: list[DeadLetter] = []

    async def send(letter: DeadLetter) -> None:
        sent.append(letter)

    # Invalid events never reach the creator.
    handler = RideEventHandler(cast(PaymentCreator, object()), send)
    record = IncomingRecord("payment-events", 0, 7, b"u1", value, [])
    with caplog.at_level(logging.WARNING, logger="services.consumer.handler"):
        assert await handler.handle(record) is Outcome.DEAD_LETTERED
    assert len(sent) == 1
    [line] = [r for r in caplog.records if r.getMessage().startswith("ride event sent")]
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
