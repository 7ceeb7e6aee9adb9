"""The Stripe simulator driven by the real `stripe` SDK, with a receiver that verifies every
webhook signature the way our webhook service does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import stripe
from aiohttp import web

from devstack.stripe_simulator import SimulatorConfig, create_app
from devstack.stripe_simulator.events import API_VERSION
from devstack.stripe_simulator.forms import decode_form
from tests.helpers import serve

API_KEY = "sk_test_simulator_suite"
SECRET = "whsec_simulator_suite"
EVENT_WAIT_S = 5.0

# The SDK's HTTPXClient passes bytes as `data=`, which httpx 0.28 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")


@dataclass
class Receiver:
    """A webhook endpoint that keeps the events whose signature verifies."""

    url: str = ""
    fail_next: int = 0
    requests: int = 0
    rejected: int = 0
    signatures: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    events: asyncio.Queue[stripe.Event] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        payload = await request.text()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500, text="try again")
        signature = request.headers.get("Stripe-Signature")
        self.content_types.append(request.headers.get("Content-Type", ""))
        try:
            event = stripe.Webhook.construct_event(payload, signature, SECRET, tolerance=300)
        except stripe.SignatureVerificationError:
            self.rejected += 1
            return web.Response(status=400, text="bad signature")
        self.signatures.append(signature or "")
        self.events.put_nowait(event)
        return web.Response(text="ok")

    async def next_event(self) -> stripe.Event:
        return await asyncio.wait_for(self.events.get(), EVENT_WAIT_S)

    async def next_types(self, count: int) -> list[str]:
        return [(await self.next_event()).type for _ in range(count)]

    async def assert_quiet(self, seconds: float = 0.5) -> None:
        await asyncio.sleep(seconds)
        assert self.events.empty()
        assert self.requests == 0


@dataclass
class Sim:
    url: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body) as response:
            return response.status, await response.json()

    async def act(self, session_id: str, action: str, **body: Any) -> dict[str, Any]:
        status, result = await self.call("POST", f"/_sim/sessions/{session_id}/{action}", body)
        assert status == 200, result
        assert isinstance(result, dict)
        return result

    async def events(self) -> list[dict[str, Any]]:
        _, body = await self.call("GET", "/_sim/events")
        data: list[dict[str, Any]] = body["data"]
        return data

    async def session_count(self) -> int:
        _, body = await self.call("GET", "/_sim/sessions")
        count: int = body["count"]
        return count


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", endpoint.handle)
    runner, url = await serve(app)
    endpoint.url = url + "/webhook"
    yield endpoint
    await runner.cleanup()


@pytest.fixture
async def sim(receiver: Receiver) -> AsyncIterator[Sim]:
    config = SimulatorConfig(
        api_key=API_KEY,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_initial_backoff_s=0.05,
        expiry_sweep_s=0.1,
    )
    runner, url = await serve(create_app(config))
    async with aiohttp.ClientSession() as http:
        yield Sim(url, http)
    await runner.cleanup()


ClientFactory = Callable[..., stripe.StripeClient]


@pytest.fixture
async def make_client(sim: Sim) -> AsyncIterator[ClientFactory]:
    transports: list[stripe.HTTPXClient] = []

    def make(key: str = API_KEY, retries: int = 2) -> stripe.StripeClient:
        transport = stripe.HTTPXClient()
        transports.append(transport)
        return stripe.StripeClient(
            key,
            base_addresses={"api": sim.url},
            http_client=transport,
            max_network_retries=retries,
        )

    yield make
    for transport in transports:
        await transport.close_async()  # type: ignore[no-untyped-call]


@pytest.fixture
def client(make_client: ClientFactory) -> stripe.StripeClient:
    return make_client()


def ride_params(ride: str = "r1", amount: int = 2550, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mode": "payment",
        "success_url": "http://localhost:3000/success",
        "cancel_url": "http://localhost:3000/cancel",
        "client_reference_id": ride,
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": "usd",
                    "unit_amount": amount,
                    "product_data": {"name": f"Ride {ride}"},
                },
            }
        ],
        "metadata": {"rideId": ride, "userId": "u1"},
        "payment_intent_data": {"metadata": {"rideId": ride, "userId": "u1"}},
    }
    return params | extra


async def create(
    client: stripe.StripeClient, params: dict[str, Any], key: str | None = None
) -> stripe.checkout.Session:
    options: dict[str, Any] = {"idempotency_key": key} if key else {}
    return await client.v1.checkout.sessions.create_async(
        params=params,  # type: ignore[arg-type]  # plain dicts, to send invalid ones too
        options=options,  # type: ignore[arg-type]
    )


# --- API -----------------------------------------------------------------------------------


async def test_create_returns_a_stripe_shaped_session(
    sim: Sim, client: stripe.StripeClient
) -> None:
    before = int(time.time())
    session = await create(client, ride_params(), key="checkout-r1")

    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session"
    assert session.url == f"{sim.url}/checkout/{session.id}"
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert (session.amount_total, session.currency, session.mode) == (2550, "usd", "payment")
    assert session.client_reference_id == "r1"
    assert session.metadata is not None
    assert session.metadata.to_dict() == {"rideId": "r1", "userId": "u1"}
    assert session.payment_intent is None
    assert session.success_url == "http://localhost:3000/success"
    assert session.cancel_url == "http://localhost:3000/cancel"
    assert session.livemode is False
    assert before <= session.created <= int(time.time())
    assert session.expires_at == session.created + 24 * 3600


async def test_expires_at_param_is_honoured(client: stripe.StripeClient) -> None:
    expires_at = int(time.time()) + 3600
    session = await create(client, ride_params(expires_at=expires_at))
    assert session.expires_at == expires_at


async def test_same_key_and_params_replay_the_same_session(
    sim: Sim, client: stripe.StripeClient
) -> None:
    first = await create(client, ride_params(), key="checkout-r1")
    again = await create(client, ride_params(), key="checkout-r1")

    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert await sim.session_count() == 1


async def test_same_key_with_other_params_is_an_idempotency_error(
    client: stripe.StripeClient,
) -> None:
    await create(client, ride_params(amount=2550), key="checkout-r1")
    with pytest.raises(stripe.IdempotencyError):
        await create(client, ride_params(amount=9999), key="checkout-r1")


async def test_concurrent_creates_with_one_key_make_one_session(
    sim: Sim, client: stripe.StripeClient
) -> None:
    sessions = await asyncio.gather(
        *(create(client, ride_params(), key="checkout-busy") for _ in range(20))
    )
    assert len({s.id for s in sessions}) == 1
    assert await sim.session_count() == 1


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"success_url": None}, "success_url"),
        ({"cancel_url": None}, "cancel_url"),
        ({"mode": None}, "mode"),
        ({"mode": "subscription"}, "mode"),
        ({"line_items": []}, "line_items"),
        ({"line_items": None}, "line_items"),
        ({"unit_amount": 0}, "line_items[0][price_data][unit_amount]"),
        ({"currency": None}, "line_items[0][price_data][currency]"),
        ({"quantity": None}, "line_items[0][quantity]"),
        ({"name": None}, "line_items[0][price_data][product_data][name]"),
        ({"expires_at": 1}, "expires_at"),
        ({"no_such_param": "x"}, "no_such_param"),
    ],
)
async def test_invalid_params_are_rejected_with_the_param(
    client: stripe.StripeClient, change: dict[str, Any], param: str
) -> None:
    params = ride_params()
    item = params["line_items"][0] if params["line_items"] else {}
    for name, value in change.items():
        if name == "quantity":
            item.pop("quantity")
        elif name in ("unit_amount", "currency"):
            item["price_data"][name] = value
        elif name == "name":
            item["price_data"]["product_data"].pop("name")
        else:
            params[name] = value  # None is left out by the SDK's encoder

    with pytest.raises(stripe.InvalidRequestError) as caught:
        await create(client, params, key="checkout-bad")
    assert caught.value.http_status == 400
    assert caught.value.param == param
    # Like Stripe, a request that failed validation is not remembered under its key.
    assert (await create(client, ride_params(), key="checkout-bad")).status == "open"


def priced(amount: int, currency: str) -> dict[str, Any]:
    params = ride_params(amount=amount)
    params["line_items"][0]["price_data"]["currency"] = currency
    return params


@pytest.mark.parametrize(
    ("currency", "below", "minimum", "shown"),
    [
        ("usd", 49, 50, "$0.50 usd"),
        ("gbp", 29, 30, "£0.30 gbp"),
        ("jpy", 49, 50, "¥50 jpy"),
        ("huf", 17499, 17500, "175.00 huf"),
    ],
)
async def test_a_session_below_stripes_minimum_charge_is_refused(
    client: stripe.StripeClient, currency: str, below: int, minimum: int, shown: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await create(client, priced(below, currency), key="checkout-small")
    error = caught.value
    assert (error.http_status, error.code) == (400, "amount_too_small")
    assert error.user_message == (
        f"The Checkout Session's total amount due must add up to at least {shown}"
    )
    assert error.error is not None
    assert error.error.doc_url == "https://stripe.com/docs/error-codes/amount-too-small"
    # A request refused as invalid is not remembered under its idempotency key.
    session = await create(client, priced(minimum, currency), key="checkout-small")
    assert session.amount_total == minimum


async def test_three_decimal_amounts_must_end_in_zero(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await create(client, priced(1005, "kwd"))
    assert caught.value.code == "invalid_charge_amount"
    assert (await create(client, priced(1010, "kwd"))).amount_total == 1010


async def test_a_payment_intent_below_the_minimum_is_refused(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    intents = client.v1.payment_intents
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await intents.create_async(params={"amount": 49, "currency": "usd"})
    error = caught.value
    assert (error.code, error.param) == ("amount_too_small", "amount")
    assert error.user_message == "Amount must be at least $0.50 usd"
    intent = await intents.create_async(
        params={"amount": 50, "currency": "usd", "metadata": {"rideId": "r1"}}
    )
    assert (intent.status, intent.amount) == ("requires_payment_method", 50)
    created = await receiver.next_event()
    assert (created.type, created.data.object["id"]) == ("payment_intent.created", intent.id)


async def test_events_and_answers_are_in_the_api_version_the_sdk_pins(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    assert stripe.api_version == API_VERSION
    session = await create(client, ride_params())
    assert session.last_response is not None
    assert session.last_response.headers["Stripe-Version"] == stripe.api_version
    await sim.act(session.id, "expire")
    event = await receiver.next_event()
    assert event.api_version == stripe.api_version
    assert session.ui_mode == "hosted_page"


async def test_retrieve_list_and_expire_through_the_sdk(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    created = [await create(client, ride_params(ride=f"r{i}")) for i in range(3)]
    session = created[0]

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert fetched.to_dict() == session.to_dict()
    page = await client.v1.checkout.sessions.list_async(params={"limit": 2})
    assert [s.id for s in page.data] == [created[2].id, created[1].id]
    assert page.has_more

    expired = await client.v1.checkout.sessions.expire_async(session.id)
    assert expired.status == "expired"
    event = await receiver.next_event()
    assert event.type == "checkout.session.expired"
    assert event.data.object["id"] == session.id
    assert event.request is not None and event.request.id is not None
    assert (await client.v1.checkout.sessions.retrieve_async(session.id)).status == "expired"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.expire_async(session.id)
    assert caught.value.http_status == 400


async def test_unknown_ids_are_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.retrieve_async("cs_test_nope")
    assert (caught.value.http_status, caught.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.payment_intents.retrieve_async("pi_nope")
    assert caught.value.http_status == 404


async def test_a_bad_api_key_is_an_authentication_error(make_client: ClientFactory) -> None:
    with pytest.raises(stripe.AuthenticationError) as caught:
        await create(make_client("sk_test_wrong"), ride_params())
    assert caught.value.http_status == 401


async def test_missing_authorization_is_401_in_stripes_shape(sim: Sim) -> None:
    async with sim.http.get(sim.url + "/v1/checkout/sessions") as response:
        assert response.status == 401
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert "API key" in error["message"]


@pytest.mark.parametrize(
    ("status", "error"), [(500, stripe.APIError), (429, stripe.RateLimitError)]
)
async def test_injected_faults_answer_n_calls_then_recover(
    sim: Sim, make_client: ClientFactory, status: int, error: type[Exception]
) -> None:
    client = make_client(retries=0)
    code, _ = await sim.call("POST", "/_sim/faults", {"status": status, "count": 2})
    assert code == 200

    for _ in range(2):
        with pytest.raises(error):
            await create(client, ride_params(), key="checkout-faulty")
    # The failed calls never ran, so the key is still free.
    assert (await create(client, ride_params(), key="checkout-faulty")).status == "open"
    assert await sim.session_count() == 1


async def test_sdk_retries_ride_through_a_500(sim: Sim, client: stripe.StripeClient) -> None:
    await sim.call("POST", "/_sim/faults", {"status": 500, "count": 1})
    assert (await create(client, ride_params(), key="checkout-retry")).status == "open"


async def test_injected_latency_delays_api_calls(sim: Sim, client: stripe.StripeClient) -> None:
    await sim.call("POST", "/_sim/faults", {"latency_ms": 300})
    started = time.monotonic()
    await create(client, ride_params())
    assert time.monotonic() - started >= 0.3
    await sim.call("DELETE", "/_sim/faults")
    started = time.monotonic()
    await create(client, ride_params())
    assert time.monotonic() - started < 0.3


# --- customer actions and webhooks ---------------------------------------------------------


async def test_pay_sends_intent_succeeded_then_session_completed(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params(), key="checkout-r1")
    result = await sim.act(session.id, "pay")
    assert [e["type"] for e in result["events"]] == [
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]

    succeeded, completed = await receiver.next_event(), await receiver.next_event()
    assert succeeded.type == "payment_intent.succeeded"
    intent = succeeded.data.object
    assert (intent["status"], intent["amount"], intent["currency"]) == ("succeeded", 2550, "usd")
    assert intent["metadata"].to_dict() == {"rideId": "r1", "userId": "u1"}
    assert intent["latest_charge"].startswith("ch_")
    assert completed.type == "checkout.session.completed"
    paid = completed.data.object
    assert (paid["status"], paid["payment_status"]) == ("complete", "paid")
    assert paid["payment_intent"] == intent["id"]
    assert paid["metadata"]["rideId"] == "r1"
    assert receiver.content_types == ["application/json; charset=utf-8"] * 2

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_intent) == ("complete", intent["id"])
    fetched_intent = await client.v1.payment_intents.retrieve_async(intent["id"])
    assert fetched_intent.status == "succeeded"


async def test_decline_then_pay_reuses_the_payment_intent(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    await sim.act(session.id, "decline")
    failed = await receiver.next_event()
    assert failed.type == "payment_intent.payment_failed"
    assert failed.data.object["status"] == "requires_payment_method"
    assert failed.data.object["last_payment_error"]["code"] == "card_declined"
    assert (await client.v1.checkout.sessions.retrieve_async(session.id)).status == "open"

    await sim.act(session.id, "pay")
    succeeded = await receiver.next_event()
    assert succeeded.type == "payment_intent.succeeded"
    assert succeeded.data.object["id"] == failed.data.object["id"]
    assert succeeded.data.object["last_payment_error"] is None
    assert (await receiver.next_event()).type == "checkout.session.completed"


async def test_expire_sends_session_expired(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    await sim.act(session.id, "expire")
    event = await receiver.next_event()
    assert event.type == "checkout.session.expired"
    assert event.data.object["status"] == "expired"


async def test_expire_after_a_decline_cancels_the_intent_first(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    await sim.act(session.id, "decline")
    await sim.act(session.id, "expire")
    assert await receiver.next_types(3) == [
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "checkout.session.expired",
    ]


async def test_sessions_expire_on_their_own_at_expires_at(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params(expires_at=int(time.time()) + 1))
    event = await receiver.next_event()
    assert (event.type, event.data.object["id"]) == ("checkout.session.expired", session.id)


async def test_deliver_false_changes_state_but_sends_nothing(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    result = await sim.act(session.id, "pay", deliver=False)

    assert result["session"]["status"] == "complete"
    assert len(result["events"]) == 2
    await receiver.assert_quiet()
    assert [e["delivery"]["status"] for e in await sim.events()] == ["not_sent", "not_sent"]
    assert (await client.v1.checkout.sessions.retrieve_async(session.id)).status == "complete"


async def test_acting_on_a_closed_session_is_a_conflict(
    sim: Sim, client: stripe.StripeClient
) -> None:
    session = await create(client, ride_params())
    await sim.act(session.id, "pay", deliver=False)
    status, body = await sim.call("POST", f"/_sim/sessions/{session.id}/expire")
    assert status == 409
    assert body["error"]["code"] == "checkout_session_not_open"
    status, _ = await sim.call("POST", "/_sim/sessions/cs_test_nope/pay")
    assert status == 404


async def test_failed_deliveries_are_retried_and_recorded(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    receiver.fail_next = 2
    session = await create(client, ride_params())
    await sim.act(session.id, "pay")

    assert await receiver.next_types(2) == [
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    first, second = await sim.events()
    assert first["delivery"]["status"] == "delivered"
    assert [a["status"] for a in first["delivery"]["attempts"]] == [500, 500, 200]
    assert [a["status"] for a in second["delivery"]["attempts"]] == [200]
    assert receiver.requests == 4


async def test_every_secret_signs_during_rotation(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    status, _ = await sim.call("POST", "/_sim/config", {"webhook_secret": f"whsec_old,{SECRET}"})
    assert status == 200
    session = await create(client, ride_params())
    await sim.act(session.id, "expire")

    assert (await receiver.next_event()).type == "checkout.session.expired"
    assert receiver.signatures[0].count("v1=") == 2
    assert receiver.rejected == 0


async def test_reset_forgets_everything(sim: Sim, client: stripe.StripeClient) -> None:
    await create(client, ride_params(), key="checkout-r1")
    status, _ = await sim.call("POST", "/_sim/reset")
    assert status == 200
    assert await sim.session_count() == 0
    assert await sim.events() == []
    assert (await sim.call("GET", "/_sim/health"))[0] == 200


# --- hosted checkout page ------------------------------------------------------------------


async def test_hosted_page_shows_the_ride_amount_and_its_buttons(
    sim: Sim, client: stripe.StripeClient
) -> None:
    session = await create(client, ride_params(ride="ride-42"))
    assert session.url is not None
    async with sim.http.get(session.url) as response:
        assert response.status == 200
        html = await response.text()
    assert "25.50" in html
    assert "ride-42" in html
    for button in ("pay", "debit", "decline", "cancel", "expire", "abandon"):
        assert f'id="{button}"' in html
        assert f'action="/checkout/{session.id}/{button}"' in html


async def test_hosted_page_actions(
    sim: Sim, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await create(client, ride_params())
    page = f"{sim.url}/checkout/{session.id}"

    async with sim.http.post(page + "/cancel", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "http://localhost:3000/cancel"
    async with sim.http.post(page + "/pay", allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "http://localhost:3000/success"
    assert await receiver.next_types(2) == [
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    async with sim.http.post(page + "/expire") as response:
        assert response.status == 409


# --- form decoding ---------------------------------------------------------------------------


def test_form_decoding_builds_nested_dicts_and_lists() -> None:
    body = (
        "mode=payment&line_items[0][price_data][unit_amount]=2550"
        "&line_items[0][quantity]=1&line_items[1][quantity]=2"
        "&metadata[rideId]=r1&metadata[0]=zero"
        "&payment_intent_data[metadata][userId]=u1&expand[0]=payment_intent"
    )
    assert decode_form(body) == {
        "mode": "payment",
        "line_items": [
            {"price_data": {"unit_amount": "2550"}, "quantity": "1"},
            {"quantity": "2"},
        ],
        "metadata": {"rideId": "r1", "0": "zero"},
        "payment_intent_data": {"metadata": {"userId": "u1"}},
        "expand": ["payment_intent"],
    }
