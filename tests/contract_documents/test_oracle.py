"""The contract documents as test oracles refuse what they do not describe: a field the system
sends that its schema does not know fails the test that saw it (tests/contracts.py)."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from typing import Any

import pytest

from shared import messages
from shared.status_events import STATUS_EVENTS_TOPIC, StatusEvent
from tests.contracts import (
    ContractViolation,
    check_http_answer,
    check_socket_message,
    check_topic_record,
    openapi,
)

PAYMENT = "/payment-service/payments/{rideId}"


def documented_record() -> dict[str, Any]:
    """The payment record the OpenAPI document shows as its example."""
    example = openapi().document["paths"][PAYMENT]["get"]["responses"]["200"]["content"]
    return copy.deepcopy(example["application/json"]["example"])


def status_event() -> dict[str, Any]:
    return asdict(
        StatusEvent(
            rideId="ride123",
            userId="user456",
            status="succeeded",
            amount=2550,
            currency="usd",
            stripeSessionId="cs_test_a1b2c3",
            attempt=1,
            version=3,
            amountRefunded=0,
            occurredAt="2026-11-29T18:05:40+00:00",
            eventId="pst_0f1e2d3c",
        )
    )


def socket_message() -> dict[str, Any]:
    """A status update as a rider's socket carries it: with its id in the rider's history."""
    update = messages.payment_status_update(
        "ride123", "succeeded", "cs_1", amount=700, currency="usd"
    )
    return {**update, "id": "1764439336000-0"}


def test_what_the_documents_describe_passes() -> None:
    check_http_answer("GET", PAYMENT, 200, json.dumps(documented_record()))
    check_topic_record(STATUS_EVENTS_TOPIC, json.dumps(status_event()).encode(), [])
    check_socket_message(socket_message())


@pytest.mark.parametrize(
    "where", [(), ("attempts", 0), ("history", 1)], ids=["record", "attempt", "history"]
)
def test_a_record_field_the_contract_does_not_describe_fails(where: tuple[Any, ...]) -> None:
    record = documented_record()
    node = record
    for step in where:
        node = node[step]
    node["debugInfo"] = "internal"
    with pytest.raises(ContractViolation, match="debugInfo"):
        check_http_answer("GET", PAYMENT, 200, json.dumps(record))


def test_a_status_event_field_the_contract_does_not_describe_fails() -> None:
    event = status_event() | {"internalNote": "x"}
    with pytest.raises(ContractViolation, match="internalNote"):
        check_topic_record(STATUS_EVENTS_TOPIC, json.dumps(event).encode(), [])


def test_a_socket_message_field_the_contract_does_not_describe_fails() -> None:
    with pytest.raises(ContractViolation, match="internalNote"):
        check_socket_message(socket_message() | {"internalNote": "x"})
