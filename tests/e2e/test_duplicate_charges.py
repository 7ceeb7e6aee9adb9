"""A ride paid twice, across the three processes and the Stripe simulator (which delivers every
webhook, the refund's too): the second charge is refunded at Stripe, the rider told over the
socket, the record says so, and the refund's own events are taken for what they are."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import RunningPart
from tests.e2e.conftest import System
from tests.e2e.test_checkout_attempts import (
    _attached,
    next_of_type,
    record,
    second_attempt_by_hand,
    sim,
    status_becomes,
)
from tests.e2e.test_payment_flow import publish_ride
from tests.helpers import eventually, next_message


async def simulator_get(http: aiohttp.ClientSession, system: System, path: str) -> Any:
    async with http.get(f"{system.stripe_url}/_sim/{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_old_link_paid_in_another_tab_is_given_back_and_the_rider_told(
    system: System, kafka: RunningPart, mongo: RunningPart, unique: str
) -> None:
    ride, user = f"paid-twice-{unique}", f"rider-{unique}"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(system.websocket_url, params={"userId": user}) as socket:
            assert (await next_message(socket))["type"] == "registration_success"
            await publish_ride(kafka, ride, user, "22.00")
            first = await eventually(
                lambda: _attached(http, system, ride), timeout_s=60, what="the first session"
            )
            second = await second_attempt_by_hand(mongo, system, ride, user, 2200)
            await sim(http, system, "pay", second)
            paid = await status_becomes(http, system, ride, "succeeded")

            await sim(http, system, "pay", first["stripeSessionId"])  # the old link

            told = await next_of_type(socket, "duplicate_charge_refunded", ride)
        assert (told["amount"], told["currency"]) == (2200, "usd")
        intent = told["paymentIntentId"]
        assert intent != paid["paymentIntentId"]
        refunds = (await simulator_get(http, system, f"refunds?payment_intent={intent}"))["data"]
        assert [(r["amount"], r["reason"], r["status"]) for r in refunds] == [
            (2200, "duplicate", "succeeded")
        ]

        async def refund_events_answered() -> list[str] | None:
            events = (await simulator_get(http, system, "events"))["data"]
            answers = [
                e["delivery"]["attempts"][-1]["answer"]
                for e in events
                if e["type"] in ("refund.created", "charge.refunded")
                and e["data"]["object"].get("payment_intent") == intent
                and e["delivery"]["attempts"]
                and e["delivery"]["attempts"][-1]["status"] == 200
            ]
            return answers if len(answers) == 2 else None

        for answer in await eventually(refund_events_answered, what="the refund's events"):
            assert '"mismatched"' not in str(answer), answer
        settled = await record(http, system, ride)
        assert (settled["status"], settled["amountRefunded"], settled["attempt"]) == (
            "succeeded",
            0,
            2,
        )
        [duplicate] = settled["duplicateCharges"]
        assert (duplicate["paymentIntentId"], duplicate["attempt"]) == (intent, 1)
        assert (duplicate["refundStatus"], duplicate["stripeRefundId"]) == (
            "succeeded",
            refunds[0]["id"],
        )
