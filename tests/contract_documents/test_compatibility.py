"""The documents stay compatible with the released ones (contracts/released/): other teams
build against those. The checker itself is shown to see each kind of breaking change."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.contract_changes import breaking_changes
from tests.contracts import ASYNCAPI, CONTRACTS_DIR, OPENAPI, Document, load_document

RELEASED_DIR = CONTRACTS_DIR / "released"


@pytest.mark.parametrize("name", [ASYNCAPI, OPENAPI])
def test_the_current_document_breaks_nothing_released(name: str) -> None:
    released, current = load_document(name, RELEASED_DIR), load_document(name)
    assert breaking_changes(released, current) == []


def changed(name: str, change: Callable[[Document], Any]) -> list[str]:
    """The breaking changes the checker finds once `change` is made to the released document."""
    released = load_document(name, RELEASED_DIR)
    current = copy.deepcopy(released)
    change(current)
    return breaking_changes(released, current)


def schema(document: Document, name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def test_a_field_removed_from_an_output_is_breaking() -> None:
    found = changed(ASYNCAPI, lambda d: schema(d, "StatusEvent")["properties"].pop("eventId"))
    assert "payment-status-events statusChanged payload.eventId: removed" in found


def with_field(name: str, field: str, type_: str) -> Callable[[Document], None]:
    """A change that gives the schema `name` a field (or retypes the one it has)."""

    def change(document: Document) -> None:
        schema(document, name)["properties"][field] = {"type": type_}

    return change


def test_a_field_retyped_is_breaking() -> None:
    found = changed(ASYNCAPI, with_field("StatusEvent", "version", "string"))
    retyped = "payment-status-events statusChanged payload.version: retyped from"
    assert f"{retyped} ['integer'] to ['string']" in found


def test_a_status_renamed_is_breaking() -> None:
    def rename(document: Document) -> None:
        statuses = schema(document, "PaymentStatus")["enum"]
        statuses[statuses.index("canceled")] = "cancelled"

    removed = "payment-status-events statusChanged payload.status: enum value 'canceled' removed"
    assert removed in changed(ASYNCAPI, rename)


def test_a_required_input_field_added_is_breaking_and_an_optional_one_is_not() -> None:
    def require_city(document: Document) -> None:
        ride = schema(document, "RideEvent")
        ride["properties"]["city"] = {"type": "string"}
        ride["required"].append("city")

    newly_required = "payment-events rideEnded payload.city: newly required"
    assert changed(ASYNCAPI, require_city) == [newly_required]
    assert changed(ASYNCAPI, with_field("RideEvent", "city", "string")) == []


def test_an_output_field_added_is_not_breaking() -> None:
    assert changed(ASYNCAPI, with_field("StatusEvent", "city", "string")) == []


def test_a_message_or_an_answer_removed_is_breaking() -> None:
    found = changed(ASYNCAPI, lambda d: d["operations"].pop("sendStatusEvents"))
    assert "payment-status-events statusChanged payload: removed" in found

    def drop_the_503(document: Document) -> None:
        del document["paths"]["/payment-service/webhook"]["post"]["responses"]["503"]

    assert changed(OPENAPI, drop_the_503) == ["POST /payment-service/webhook 503: removed"]


def test_a_webhook_result_renamed_is_breaking() -> None:
    def rename(document: Document) -> None:
        results = schema(document, "WebhookReceipt")["properties"]["result"]["enum"]
        results[results.index("unknown_payment")] = "unknown"

    found = changed(OPENAPI, rename)
    assert "POST /payment-service/webhook 200.result: enum value 'unknown_payment' removed" in found


def test_a_required_parameter_added_is_breaking() -> None:
    def require_region(document: Document) -> None:
        operation = document["paths"]["/payment-service/users/{userId}/outstanding"]["get"]
        region = {"name": "region", "in": "query", "required": True, "schema": {"type": "string"}}
        operation["parameters"].append(region)

    found = changed(OPENAPI, require_region)
    assert found == [
        "GET /payment-service/users/{userId}/outstanding parameters.query:region: newly required"
    ]
