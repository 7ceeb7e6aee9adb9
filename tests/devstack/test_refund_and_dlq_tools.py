"""`make refund`, `make dlq` and `make replay` against a running stack: a refund says before
sending what the consumer will refuse and after what became of it; the dead letters of both
topics are listed and replayed, each named by a ref that says its topic."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import aiohttp
import pytest

from tests.devstack.conftest import RunningStack
from tests.devstack.test_tools import run_tool
from tests.helpers import eventually, read_topic


async def tool(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_tool, "devstack", *args, "--folder", str(stack.folder))


async def record(stack: RunningStack, ride: str) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{stack.ports.webhook_internal}/payment-service/payments/{ride}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        if response.status != 200:
            return None
        body: dict[str, Any] = await response.json()
        return body


async def record_in(stack: RunningStack, ride: str, status: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await record(stack, ride)
        linked = status != "pending" or bool(found and found["paymentUrl"])
        return found if found and found["status"] == status and linked else None

    return await eventually(probe, timeout_s=60, what=f"ride {ride} {status}")


async def ride_in(stack: RunningStack, ride: str, status: str) -> None:
    """A ride that ended, then was paid (`succeeded`) or abandoned (`canceled`) on Checkout."""
    ridden = await tool(stack, "ride", "--user", f"u-{ride}", "--fare", "25.50", "--ride", ride)
    assert ridden.returncode == 0, ridden.stderr
    pending = await record_in(stack, ride, "pending")
    action = {"succeeded": "pay", "canceled": "abandon"}[status]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{pending['paymentUrl']}/{action}") as response:
            assert response.status == 200, await response.text()
    await record_in(stack, ride, status)


async def refunded_ride(stack: RunningStack, ride: str) -> None:
    await ride_in(stack, ride, "succeeded")
    refunded = await tool(stack, "refund", "--ride", ride)
    assert refunded.returncode == 0, refunded.stderr


def consumer_log(stack: RunningStack) -> list[dict[str, Any]]:
    text = (stack.folder / "logs" / "consumer.log").read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_a_refund_says_what_became_of_it(stack: RunningStack, unique: str) -> None:
    ride = f"ride-{unique}"
    await ride_in(stack, ride, "succeeded")

    partial = await tool(stack, "refund", "--ride", ride, "--amount", "5.00")
    assert partial.returncode == 0, partial.stderr
    assert partial.stderr == ""  # nothing to warn of
    request, outcome = partial.stdout.splitlines()
    assert json.loads(request)["amount"] == "5.00"
    assert outcome.startswith(f"devstack: refund {json.loads(request)['refundId']} succeeded")
    assert f"ride {ride} is partially_refunded, amountRefunded 500 of 2550" in outcome

    rest = await tool(stack, "refund", "--ride", ride)
    assert rest.returncode == 0, rest.stderr
    assert f"ride {ride} is refunded, amountRefunded 2550 of 2550" in rest.stdout


@pytest.mark.parametrize(
    ("state", "amount", "reason"),
    [
        ("unknown", None, "unknown ride"),
        ("canceled", None, "ride is not paid (status canceled)"),
        ("refunded", None, "ride is already fully refunded"),
        ("succeeded", "abc", "amount 'abc' is not a decimal number"),
    ],
)
async def test_a_refund_the_consumer_will_refuse_is_warned_of_then_shown_refused(
    stack: RunningStack, unique: str, state: str, amount: str | None, reason: str
) -> None:
    ride = f"ride-{unique}"
    if state == "refunded":
        await refunded_ride(stack, ride)
    elif state != "unknown":
        await ride_in(stack, ride, state)

    result = await tool(stack, "refund", "--ride", ride, *(["--amount", amount] if amount else []))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    warning, refusal = result.stderr.strip().splitlines()  # the warning came before sending
    assert warning.startswith("devstack: the consumer will refuse this refund: ")
    assert reason in warning
    assert refusal.startswith(f"devstack: refused: {reason}")
    assert "dead letter refunds:0:" in refusal and "make dlq TOPIC=refunds" in refusal
    assert json.loads(result.stdout)["rideId"] == ride  # sent all the same

    async def logged_with_its_ride() -> bool:
        lines = [line for line in consumer_log(stack) if "refund" in line["message"]]
        assert all(line.get("rideId") for line in lines), [x for x in lines if not x.get("rideId")]
        return any(
            line["message"] == "refund request sent to the dead-letter topic"
            and line["rideId"] == ride
            for line in lines
        )

    await eventually(logged_with_its_ride, what="the consumer's dead-letter line for the ride")


async def dead_letters_of_both_kinds(stack: RunningStack, unique: str) -> tuple[str, str]:
    """A ride event (its ride id) and a refund request (its refundId) the consumer refused."""
    ride = f"bad-fare-{unique}"
    ridden = await tool(stack, "ride", "--user", "u1", "--fare", "abc", "--ride", ride)
    assert ridden.returncode == 0, ridden.stderr
    refund = await refused_refund(stack, unique)
    await read_topic(
        f"127.0.0.1:{stack.ports.kafka}",
        "payment-events-dlq",
        lambda records: any(ride.encode() in (r.value or b"") for r in records),
    )
    return ride, refund


async def refused_refund(stack: RunningStack, unique: str) -> str:
    """The refundId of a request for an unknown ride, once it is a dead letter."""
    refused = await tool(stack, "refund", "--ride", f"unknown-{unique}")
    assert refused.returncode == 1 and "refused" in refused.stderr, refused.stderr
    refund_id: str = json.loads(refused.stdout)["refundId"]
    return refund_id


async def listed(stack: RunningStack, *topic: str) -> list[dict[str, Any]]:
    result = await tool(stack, "dlq", *topic)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def test_dlq_lists_both_topics_or_the_one_named(stack: RunningStack, unique: str) -> None:
    ride, refund = await dead_letters_of_both_kinds(stack, unique)

    letters = await listed(stack)
    [ride_letter] = [letter for letter in letters if ride in letter["value"]]
    [refund_letter] = [letter for letter in letters if refund in letter["value"]]
    assert ride_letter["topic"] == "payment-events-dlq"
    assert ride_letter["ref"].startswith("rides:")
    assert "fare 'abc' is not a decimal number" in ride_letter["reason"]
    assert refund_letter["topic"] == "refund-requests-dlq"
    assert refund_letter["ref"].startswith("refunds:")
    assert "unknown ride" in refund_letter["reason"]

    refunds_only = await listed(stack, "--topic", "refunds")
    assert {letter["topic"] for letter in refunds_only} == {"refund-requests-dlq"}
    assert refund_letter in refunds_only
    rides_only = await listed(stack, "--topic", "rides")
    assert {letter["topic"] for letter in rides_only} == {"payment-events-dlq"}
    assert ride_letter in rides_only


async def test_replay_takes_a_ref_naming_its_topic_or_one_that_only_one_topic_holds(
    stack: RunningStack, unique: str
) -> None:
    _, first = await dead_letters_of_both_kinds(stack, unique)
    second = await refused_refund(stack, unique)
    letters = await listed(stack)
    refs = {letter["ref"] for letter in letters}
    assert {"rides:0:0", "refunds:0:0"} <= refs  # so a plain 0:0 is in both

    ambiguous = await tool(stack, "dlq", "replay", "--ref", "0:0")
    assert ambiguous.returncode == 1
    assert ambiguous.stderr.strip() == (
        "devstack: 0:0 is in both payment-events-dlq and refund-requests-dlq: "
        "say which, REF=rides:0:0 or REF=refunds:0:0"
    )

    [named] = [letter["ref"] for letter in letters if first in letter["value"]]
    replayed = await tool(stack, "dlq", "replay", "--ref", named)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"replayed": named, "to": "refund-requests"}

    # Every test here leaves at least as many refund letters as ride letters, this one one
    # more: the last refund letter's position is in refund-requests-dlq only.
    [last] = [letter["ref"] for letter in letters if second in letter["value"]]
    plain = last.removeprefix("refunds:")
    assert f"rides:{plain}" not in refs
    replayed = await tool(stack, "dlq", "replay", "--ref", plain)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"replayed": last, "to": "refund-requests"}

    # Back in refund-requests, each is refused again: a second letter of the same request.
    def twice(records: list[Any]) -> bool:
        values = [record.value or b"" for record in records]
        return all(sum(i.encode() in v for v in values) == 2 for i in (first, second))

    await read_topic(f"127.0.0.1:{stack.ports.kafka}", "refund-requests-dlq", twice)
