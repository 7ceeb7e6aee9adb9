"""What an attacker can send the webhook: crafted signature headers, signed bodies of hostile
shape, made-up event types. Each is refused (or ignored) with a clear answer and counted; none
raises past the handler. The webhook app in-process against real MongoDB and Redis."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from services.webhook.app import WEBHOOK_PATH, create_app
from shared.store import PaymentStore
from tests.conftest import RunningPart
from tests.integration.test_refund_events import charge_refunded, dispute, refund_object
from tests.integration.test_webhook import (
    Client,
    deliver,
    intent_event,
    seed,
    session_event,
    settings_for,
    signed,
    webhook_store,
)
from tests.stripe_shapes import stripe_event

__all__ = ["webhook_store"]  # a fixture this module uses


@pytest.fixture
async def client(
    kafka: RunningPart, mongo: RunningPart, redis_server: RunningPart, unique: str
) -> AsyncIterator[Client]:
    app = create_app(settings_for(kafka.url, mongo.url, redis_server.url, f"test-{unique}"))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


SIGNATURE_FAILURES = "payments_webhook_signature_failures_total"
EVENTS = "payments_webhook_events_total"
BODY = json.dumps(stripe_event("checkout.session.completed", {"id": "cs_x"})).encode()


def now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(lambda: f"t={'9' * 400},v1=0", id="timestamp-of-400-digits"),
        pytest.param(lambda: "t=²,v1=0", id="superscript-digit"),
        pytest.param(lambda: "t=١٢٣,v1=0", id="arabic-indic-digits"),
        pytest.param(lambda: f"t={now()},v1=é", id="non-ascii-signature"),
        pytest.param(lambda: f"t={now()},v1={'a' * 64}é", id="non-ascii-after-hex"),
        pytest.param(lambda: f"t={now()}," + "v1=00," * 1_000, id="header-of-6-kb"),
        pytest.param(lambda: f"t=-{now()},v1=0", id="negative-timestamp"),
        pytest.param(lambda: "t=1e9,v1=0", id="exponent"),
    ],
)
async def test_crafted_signature_headers_get_400_and_are_counted(
    client: Client, header: Any
) -> None:
    before = counted(SIGNATURE_FAILURES)
    response = await client.post(WEBHOOK_PATH, data=BODY, headers={"Stripe-Signature": header()})
    assert response.status == 400, await response.text()
    assert "invalid signature" in (await response.json())["error"]
    assert counted(SIGNATURE_FAILURES) == before + 1


def nested(depth: int) -> bytes:
    brackets = b"[" * depth + b"]" * depth
    return b'{"id": "evt_deep", "type": "x", "data": {"object": ' + brackets + b"}}"


@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_a_signed_body_nested_deep_is_malformed_and_counted(
    client: Client, depth: int
) -> None:
    body = nested(depth)
    before = counted(EVENTS, type="unknown", outcome="malformed")
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
    )
    assert response.status == 400
    assert "malformed event" in (await response.json())["error"]
    assert counted(EVENTS, type="unknown", outcome="malformed") == before + 1


async def test_a_signed_body_of_modest_depth_with_brackets_in_strings_is_read(
    client: Client,
) -> None:
    resource = {"id": "cs_x", "metadata": {"note": "[[[{{{" * 200 + '\\"'}}
    body = json.dumps(stripe_event("customer.created", resource)).encode()
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
    )
    assert (response.status, (await response.json())["result"]) == (200, "ignored")


async def test_unknown_event_types_share_one_metric_label(client: Client, unique: str) -> None:
    made_up = f"attacker.made.up.{unique}"
    before = counted(EVENTS, type="other", outcome="ignored")
    for kind in (made_up, f"{made_up}.again"):
        body = json.dumps(stripe_event(kind, {"id": "x"})).encode()
        response = await client.post(
            WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
        )
        assert response.status == 200
    assert counted(EVENTS, type="other", outcome="ignored") == before + 2
    assert counted(EVENTS, type=made_up, outcome="ignored") == 0
    known = json.dumps(stripe_event("checkout.session.completed", {"id": "cs_unpaid"})).encode()
    before_known = counted(EVENTS, type="checkout.session.completed", outcome="ignored")
    await client.post(WEBHOOK_PATH, data=known, headers={"Stripe-Signature": signed(known)})
    assert counted(EVENTS, type="checkout.session.completed", outcome="ignored") == before_known + 1


async def test_an_oversized_body_is_refused_with_its_connection(client: Client) -> None:
    before = counted("payments_webhook_oversized_bodies_total")
    huge = b"x" * (512 * 1024 + 1)
    response = await client.post(WEBHOOK_PATH, data=huge, headers={"Stripe-Signature": "t=1"})
    assert response.status == 413
    assert response.headers["Connection"] == "close"
    assert counted("payments_webhook_oversized_bodies_total") == before + 1


MALFORMED = {"type": "unknown", "outcome": "malformed"}
Event = dict[str, Any]


async def deliver_bytes(client: Client, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        WEBHOOK_PATH, data=body, headers={"Stripe-Signature": signed(body)}
    )
    return response.status, await response.json()


async def paid_ride(client: Client, store: PaymentStore, ride: str) -> None:
    session_id = await seed(store, ride)
    paid = session_event("checkout.session.completed", ride, session_id)
    assert (await deliver(client, paid))[1]["result"] == "applied"


def refund(ride: str, **fields: Any) -> Event:
    made = refund_object(ride, f"outside-{ride}", 500, "succeeded") | fields
    return stripe_event("refund.updated", made)


def with_metadata(event: Event, **metadata: Any) -> Event:
    event["data"]["object"]["metadata"] |= metadata
    return event


LONE_SURROGATE = "\ud800"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda ride: intent_event("payment_intent.succeeded", ride) | {"id": LONE_SURROGATE},
            id="surrogate-event-id",
        ),
        pytest.param(
            lambda ride: intent_event("payment_intent.succeeded", ride, id=f"pi_{LONE_SURROGATE}"),
            id="surrogate-intent-id",
        ),
        pytest.param(
            lambda ride: with_metadata(
                intent_event("payment_intent.succeeded", ride), rideId=LONE_SURROGATE
            ),
            id="surrogate-ride-id",
        ),
        pytest.param(
            lambda ride: with_metadata(refund(ride), refundId=f"r{LONE_SURROGATE}"),
            id="surrogate-refund-id",
        ),
        pytest.param(
            lambda ride: session_event(
                "checkout.session.completed", ride, f"cs_{ride}", payment_intent=LONE_SURROGATE
            ),
            id="surrogate-session-intent",
        ),
        pytest.param(
            lambda ride: intent_event("payment_intent.succeeded", ride) | {"id": "e" * 300},
            id="event-id-of-300-characters",
        ),
        pytest.param(lambda ride: refund(ride, amount=2**70), id="refund-amount-2**70"),
        pytest.param(lambda ride: refund(ride, amount=-500), id="refund-amount-negative"),
        pytest.param(lambda ride: refund(ride, amount=1.5), id="refund-amount-fraction"),
        pytest.param(lambda ride: refund(ride, amount="500"), id="refund-amount-string"),
        pytest.param(lambda ride: refund(ride, amount=True), id="refund-amount-boolean"),
        pytest.param(
            lambda ride: intent_event("payment_intent.succeeded", ride, amount=2**64),
            id="intent-amount-2**64",
        ),
        pytest.param(
            lambda ride: intent_event("payment_intent.canceled", ride, amount=-1),
            id="intent-amount-negative",
        ),
        pytest.param(
            lambda ride: session_event(
                "checkout.session.expired", ride, f"cs_{ride}", amount_total=-2550
            ),
            id="session-amount-negative",
        ),
        pytest.param(
            lambda ride: intent_event("payment_intent.succeeded", ride, currency="us dollars"),
            id="currency-not-a-code",
        ),
    ],
)
async def test_a_signed_event_with_a_malformed_field_is_refused_and_changes_nothing(
    client: Client, webhook_store: PaymentStore, unique: str, make: Callable[[str], Event]
) -> None:
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    before = await webhook_store.find_document(ride)
    malformed = counted(EVENTS, **MALFORMED)
    status, answer = await deliver(client, make(ride))
    assert status == 400, answer
    assert "malformed event" in answer["error"]
    assert counted(EVENTS, **MALFORMED) == malformed + 1
    assert await webhook_store.find_document(ride) == before


async def test_a_surrogate_encoded_in_the_bytes_is_refused(
    client: Client, webhook_store: PaymentStore, unique: str
) -> None:
    """Not escaped but encoded as UTF-8 would encode it (ED A0 80), which is not UTF-8."""
    ride = f"ride-{unique}"
    await seed(webhook_store, ride)
    body = json.dumps(intent_event("payment_intent.succeeded", ride)).encode()
    body = body.replace(f'"rideId": "{ride}"'.encode(), b'"rideId": "\xed\xa0\x80"')
    status, answer = await deliver_bytes(client, body)
    assert status == 400 and "malformed event" in answer["error"]


HOSTILE_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    2**70,
    -(2**70),
    1.5,
    1e308,
    "",
    LONE_SURROGATE,
    "x" * 5_000,
    "\x00",
    [],
    ["x"],
    {},
    {"id": LONE_SURROGATE},
]


def leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path into a JSON document, containers included."""
    paths = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += leaves(item, (*path, index))
    return paths


def replaced(event: Event, path: tuple[str | int, ...], value: Any) -> Event:
    changed = copy.deepcopy(event)
    parent: Any = changed
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return changed


# What the webhook reads of an event's object (the rest of Stripe's object is never looked at).
READ_FIELDS = frozenset(
    {
        "id", "metadata", "rideId", "refundId", "attempt", "amount", "amount_total", "currency",
        "payment_intent", "payment_status", "status", "client_reference_id", "refunds", "data",
        "failure_reason",
    }
)  # fmt: skip


def read_by_the_webhook(path: tuple[str | int, ...]) -> bool:
    if path[:2] != ("data", "object"):
        return True
    return all(isinstance(key, int) or key in READ_FIELDS for key in path[2:])


def events_about(ride: str) -> list[Event]:
    """One of each event type the webhook handles, about the ride."""
    return [
        session_event("checkout.session.completed", ride, f"cs_{ride}"),
        session_event("checkout.session.expired", ride, f"cs_{ride}", status="expired"),
        intent_event("payment_intent.succeeded", ride),
        intent_event("payment_intent.payment_failed", ride),
        refund(ride),
        with_metadata(refund(ride, status="failed"), refundId="r1"),
        charge_refunded(ride, [refund_object(ride, "r2", 500, "succeeded")]),
        stripe_event("charge.dispute.created", dispute(ride, f"dp_{ride}", "needs_response")),
        stripe_event("charge.dispute.closed", dispute(ride, f"dp_{ride}", "lost")),
    ]


@pytest.mark.parametrize("kind", range(len(events_about("r"))))
async def test_no_signed_body_gets_a_5xx_or_stores_nonsense(
    client: Client, webhook_store: PaymentStore, unique: str, kind: int
) -> None:
    """Every field the events carry (ids, metadata, amounts, currencies, nested objects), given
    each hostile value: answered 200 or 400, and the record keeps what the contract allows."""
    ride = f"ride-{unique}"
    await paid_ride(client, webhook_store, ride)
    event = events_about(ride)[kind]
    paths = [path for path in leaves(event) if read_by_the_webhook(path)]
    answers: dict[int, list[str]] = {}
    for path in paths:
        for value in HOSTILE_VALUES:
            hostile = replaced(event, path, value) | {"id": f"evt_{uuid.uuid4().hex}"}
            if path == ("id",):
                hostile["id"] = value
            status, _ = await deliver(client, hostile)
            answers.setdefault(status, []).append(f"{'.'.join(map(str, path))}={value!r:.20}")
    assert set(answers) <= {200, 400}, {s: answers[s][:5] for s in answers if s not in (200, 400)}
    document = await webhook_store.find_document(ride)
    assert document is not None
    assert 0 <= document.get("amountRefunded", 0) <= document["amount"]
    assert all(0 < r["amount"] <= document["amount"] for r in document.get("refunds", []))
    assert document["paymentIntentId"] == f"pi_{ride}"


HEALTHZ_DEADLINE_S = 2.0


async def test_healthz_answers_while_a_hostile_body_is_read(client: Client) -> None:
    """An unterminated string of escaped quotes, 60 KB: the pre-check reads it once (a
    backtracking pattern took 18-34 s on it, with /healthz waiting as long)."""
    body = b'{"id": "evt_x", "type": "x", "data": {"object": {"id": "' + b'\\"' * 30_000
    hostile = asyncio.ensure_future(deliver_bytes(client, body))
    try:
        started = time.monotonic()
        async with asyncio.timeout(HEALTHZ_DEADLINE_S * 30):
            response = await client.get("/healthz")
        waited = time.monotonic() - started
        assert response.status == 200
        assert waited < HEALTHZ_DEADLINE_S, f"/healthz waited {waited:.1f} s"
        status, answer = await hostile
        assert status == 400 and "malformed event" in answer["error"]
    finally:
        hostile.cancel()
