"""Stripe's own shapes hold the simulator: every object it serves and every event it sends has
the fields of Stripe's example of that object (tests/stripe_fixtures), with their types. And
what the project reads of Stripe's objects is still what Stripe's example and SDK say, so a
fixture update that changes one of those fields fails here, naming it."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web

from devstack.stripe_simulator import SimulatorConfig, create_app
from tests import stripe_fixtures
from tests.helpers import eventually, serve
from tests.integration.test_stripe_simulator import API_KEY, ride_params
from tests.stripe_fixtures import PROJECT_READS, read_field_problem, shape_problems

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

READS = [(kind, name) for kind, fields in PROJECT_READS.items() for name in fields]
EVERY_EVENT_TYPE = {
    "checkout.session.completed",
    "checkout.session.expired",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "payment_intent.created",
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
}


# --- the oracle itself -----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), READS, ids=[f"{k}.{n}" for k, n in READS])
def test_stripe_still_sends_what_the_project_reads(kind: str, name: str) -> None:
    assert read_field_problem(kind, name, PROJECT_READS[kind][name]) is None


def test_a_fixture_update_that_retypes_a_field_the_project_reads_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    updated = {kind: dict(obj) for kind, obj in copy.deepcopy(stripe_fixtures.examples()).items()}
    updated["charge"]["amount_refunded"] = "0"
    del updated["refund"]["payment_intent"]
    monkeypatch.setattr(stripe_fixtures, "examples", lambda: updated)
    retyped = read_field_problem(
        "charge", "amount_refunded", PROJECT_READS["charge"]["amount_refunded"]
    )
    assert retyped is not None and retyped.startswith("charge.amount_refunded: ")
    # Still declared by the SDK, gone from the example: what is left is checked.
    assert read_field_problem("refund", "payment_intent", frozenset({"string", "null"})) is not None


def example(kind: str, **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(dict(stripe_fixtures.examples()[kind]))
    if kind == "charge":
        del obj["refunds"]  # only when expanded
    return obj | changes


def test_stripes_own_examples_pass() -> None:
    for kind in ("checkout.session", "payment_intent", "charge", "refund", "dispute"):
        assert shape_problems(example(kind)) == []


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        (example("charge", amount_captured="100"), "charge.amount_captured: string"),
        (example("checkout.session", automatic_tax=None), "checkout.session.automatic_tax: null"),
        (example("refund", refunded_by="me"), "refund.refunded_by: Stripe's refund has no"),
        (example("charge", refunds={"object": "list"}), "charge.refunds: Stripe sends it only"),
        (
            example("dispute", balance_transactions=[1]),
            None,  # Stripe's example list is empty: its items are not checked
        ),
    ],
    ids=["retyped", "null-never-null", "unknown", "unexpanded-refunds", "empty-example-list"],
)
def test_the_oracle_names_the_field_at_fault(obj: dict[str, Any], problem: str | None) -> None:
    problems = shape_problems(obj)
    if problem is None:
        assert problems == []
    else:
        assert [p for p in problems if p.startswith(problem)], problems


def test_a_missing_field_and_an_event_of_the_wrong_shape_are_named() -> None:
    charge = example("charge")
    del charge["captured"]
    event = example("event", data={"object": charge, "extra": 1}, api_version=None)
    assert shape_problems(event) == [
        "event.data.extra: not in Stripe's events",
        "event.data.object.captured: missing, Stripe always returns it",
    ]


# --- the simulator, served for real ------------------------------------------------------------


@dataclass
class RawReceiver:
    """A webhook endpoint that keeps each body as the JSON it was."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(json.loads(await request.read()))
        return web.Response(text="ok")


@dataclass
class Simulator:
    url: str
    http: aiohttp.ClientSession
    client: stripe.StripeClient
    served: list[dict[str, Any]] = field(default_factory=list)

    def keep(self, resource: Any) -> Any:
        """An API answer, kept as the JSON the simulator sent."""
        self.served.append(json.loads(resource.last_response.body))
        return resource

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        method = "GET" if body is None else "POST"
        async with self.http.request(method, self.url + path, json=body) as response:
            answer = await response.json()
            assert response.status == 200, answer
            return answer

    async def events(self) -> list[dict[str, Any]]:
        records = (await self.control("/_sim/events"))["data"]
        return [{k: v for k, v in record.items() if k != "delivery"} for record in records]


@pytest.fixture
async def raw_receiver() -> AsyncIterator[RawReceiver]:
    endpoint = RawReceiver()
    app = web.Application()
    app.router.add_post("/webhook", endpoint.handle)
    runner, url = await serve(app)
    endpoint.url = url + "/webhook"
    yield endpoint
    await runner.cleanup()


@pytest.fixture
async def simulator(raw_receiver: RawReceiver) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        api_key=API_KEY, webhook_url=raw_receiver.url, webhook_secret="whsec_x"
    )
    runner, url = await serve(create_app(config))
    transport = stripe.HTTPXClient()
    client = stripe.StripeClient(
        API_KEY, base_addresses={"api": url}, http_client=transport, max_network_retries=0
    )
    async with aiohttp.ClientSession() as http:
        yield Simulator(url, http, client)
    await transport.close_async()  # type: ignore[no-untyped-call]
    await runner.cleanup()


async def session(sim: Simulator, ride: str, action: str | None = None) -> str:
    created = sim.keep(
        await sim.client.v1.checkout.sessions.create_async(params=ride_params(ride))  # type: ignore[arg-type]
    )
    if action is not None:
        await sim.control(f"/_sim/sessions/{created.id}/{action}", {})
    return str(created.id)


async def every_checkout_flow(sim: Simulator) -> list[str]:
    """Sessions through every customer action; the paid ones' ids."""
    sessions = sim.client.v1.checkout.sessions
    paid = [await session(sim, f"paid-{n}", "pay") for n in range(4)]
    declined = await session(sim, "declined", "decline")
    await sim.control(f"/_sim/sessions/{declined}/pay", {})
    await session(sim, "expired", "expire")
    await session(sim, "abandoned", "abandon")
    await session(sim, "left", "cancel")
    for outcome in ("debit_succeeds", "debit_fails"):
        await sim.control(f"/_sim/sessions/{await session(sim, outcome, 'debit')}/{outcome}", {})
    expired = await session(sim, "expired-by-api")
    sim.keep(await sessions.expire_async(expired))
    sim.keep(await sessions.retrieve_async(declined, params={"expand": ["payment_intent"]}))
    sim.keep(await sessions.list_async(params={"limit": 100}))
    return paid


async def every_refund_flow(sim: Simulator, intent: str) -> None:
    refunds = sim.client.v1.refunds
    await sim.control("/_sim/refunds/settings", {"settle_after_ms": None})
    for outcome in ("succeed", "fail"):
        pending = sim.keep(
            await refunds.create_async(params={"payment_intent": intent, "amount": 100})
        )
        await sim.control(f"/_sim/refunds/{pending.id}/{outcome}", {})
    await sim.control("/_sim/refunds/settings", {"settle_after_ms": 0, "fail_next": 1})
    at_once = sim.keep(await refunds.create_async(params={"payment_intent": intent, "amount": 100}))
    sim.keep(await refunds.retrieve_async(at_once.id))
    sim.keep(await refunds.create_async(params={"payment_intent": intent, "amount": 100}))


async def every_dispute_flow(sim: Simulator, paid: list[str]) -> None:
    steps = [
        (False, ["evidence", "won"]),
        (False, ["lost"]),
        (True, ["evidence", "warning_closed"]),
    ]
    for session_id, (inquiry, moves) in zip(paid, steps, strict=False):
        opened = await sim.control("/_sim/disputes", {"session": session_id, "inquiry": inquiry})
        dispute = opened["dispute"]["id"]
        for move in moves:
            path = "evidence" if move == "evidence" else "close"
            await sim.control(f"/_sim/disputes/{dispute}/{path}", {"outcome": move})
        sim.keep(await sim.client.v1.disputes.retrieve_async(dispute))


async def every_object_served(sim: Simulator) -> None:
    paid = await every_checkout_flow(sim)
    sessions = sim.client.v1.checkout.sessions
    intent = str((await sessions.retrieve_async(paid[-1])).payment_intent)
    fetched = sim.keep(await sim.client.v1.payment_intents.retrieve_async(intent))
    sim.keep(await sim.client.v1.charges.retrieve_async(str(fetched.latest_charge)))
    await every_refund_flow(sim, intent)
    await every_dispute_flow(sim, paid)
    sim.keep(
        await sim.client.v1.payment_intents.create_async(
            params={"amount": 700, "currency": "usd", "metadata": {"rideId": "api"}}
        )
    )


def problems_of(objects: list[dict[str, Any]], what: Callable[[dict[str, Any]], str]) -> list[str]:
    found = []
    for obj in objects:
        items = obj["data"] if obj.get("object") == "list" else [obj]
        for item in items:
            found += [f"{what(item)}: {problem}" for problem in shape_problems(item)]
            for transaction in item.get("balance_transactions") or []:
                found += [f"{what(item)}: {p}" for p in shape_problems(transaction)]
    return found


async def test_every_object_and_event_the_simulator_serves_has_stripes_shape(
    simulator: Simulator, raw_receiver: RawReceiver
) -> None:
    await every_object_served(simulator)
    await eventually(
        lambda: _all_failed_refunds_sent(simulator), timeout_s=10, what="the late refund.failed"
    )
    events = await simulator.events()

    async def all_delivered() -> bool:
        return len(raw_receiver.bodies) == len(events)

    await eventually(all_delivered, timeout_s=10, what="every event delivered")
    assert {event["type"] for event in events} >= EVERY_EVENT_TYPE
    kinds = {obj.get("object") for obj in simulator.served}
    assert kinds >= {"checkout.session", "payment_intent", "charge", "refund", "dispute", "list"}
    problems = problems_of(simulator.served, lambda obj: f"answer {obj.get('id')}")
    problems += problems_of(events, lambda event: f"event {event['type']}")
    problems += problems_of(raw_receiver.bodies, lambda event: f"delivered {event['type']}")
    assert problems == [], "\n".join(problems)


async def _all_failed_refunds_sent(sim: Simulator) -> bool:
    failed = [e for e in await sim.events() if e["type"] == "refund.failed"]
    return len(failed) == 2  # one failed while pending, one after it succeeded
