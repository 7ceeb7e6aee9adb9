from __future__ import annotations

import asyncio

import pytest

from services.consumer.shutdown import Shutdown, WorkAbandoned


async def test_work_that_finishes_within_the_grace_period_is_kept() -> None:
    shutdown = Shutdown(grace_s=5)
    async with shutdown.abandonable():
        shutdown.begin()
        await asyncio.sleep(0)
    assert shutdown.stopping.is_set()


async def test_work_past_the_grace_period_is_abandoned_and_so_is_any_started_later() -> None:
    shutdown = Shutdown(grace_s=0.05)
    never = asyncio.Event()
    shutdown.begin()
    with pytest.raises(WorkAbandoned):
        async with shutdown.abandonable():
            await never.wait()
    with pytest.raises(WorkAbandoned):
        async with shutdown.abandonable():
            await never.wait()


async def test_a_timeout_of_the_work_itself_is_not_taken_for_abandonment() -> None:
    shutdown = Shutdown(grace_s=5)
    with pytest.raises(TimeoutError):
        async with shutdown.abandonable():
            raise TimeoutError("the work's own")
