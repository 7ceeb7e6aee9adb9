"""The pure parts of Stripe pacing: the in-flight limit, the local schedule, 429 delays."""

from __future__ import annotations

import asyncio

from shared.adaptive_limit import AdaptiveLimit
from shared.stripe_budget import LocalSchedule, Priority
from shared.stripe_gateway import StripeRateLimited, _rate_limit_delay, _seconds


def test_refusals_halve_the_limit_once_per_cooldown_and_successes_grow_it_back() -> None:
    limit = AdaptiveLimit(32, cooldown_s=60)
    limit.refused()
    limit.refused()  # the same burst of refusals: counted once
    assert limit.limit == 16
    for _ in range(17):
        limit.succeeded()
    assert limit.limit == 17  # about one more per window of successes
    for _ in range(10_000):
        limit.succeeded()
    assert limit.limit == 32  # never above its maximum


def test_the_limit_never_falls_below_one() -> None:
    limit = AdaptiveLimit(4, cooldown_s=0)
    for _ in range(10):
        limit.refused()
    assert limit.limit == 1


async def test_slots_wait_while_the_limit_is_reached() -> None:
    limit = AdaptiveLimit(1)
    order: list[str] = []

    async def call(name: str) -> None:
        async with limit.slot():
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(call("a"), call("b"))
    assert order == ["a in", "a out", "b in", "b out"]


def test_local_schedule_spaces_turns_and_keeps_housekeeping_behind_riders() -> None:
    schedule = LocalSchedule(10)
    first, second = schedule.reserve(Priority.RIDER), schedule.reserve(Priority.RIDER)
    assert first.taken and first.wait_s == 0
    assert second.taken and 0.09 <= second.wait_s <= 0.1
    refused = schedule.reserve(Priority.HOUSEKEEPING)
    assert not refused.taken and refused.wait_s > 0.1


def test_retry_after_is_honoured_with_jitter_and_bounded() -> None:
    told = StripeRateLimited("429", should_retry=True, retry_after_s=2.0)
    assert 2.0 <= _rate_limit_delay(told, attempt=1) <= 2.25
    untold = StripeRateLimited("429", should_retry=True, retry_after_s=None)
    assert all(0 <= _rate_limit_delay(untold, attempt=n) <= 5 for n in range(1, 20))
    assert _seconds("3") == 3.0
    assert _seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert _seconds("-1") is None and _seconds("3600") is None
