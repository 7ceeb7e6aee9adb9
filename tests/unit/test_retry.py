from __future__ import annotations

import asyncio

import pytest

from shared.retry import Backoff, RetriesStopped, until_done

NO_WAIT = Backoff(first_s=0.0, max_s=0.0)


async def test_transient_errors_are_retried_until_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise TimeoutError("not yet")
        return "done"

    assert await until_done(flaky, what="flaky", backoff=NO_WAIT) == "done"
    assert calls == 4


async def test_an_attempt_limit_gives_up_with_the_last_error() -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError(f"down {calls}")

    with pytest.raises(TimeoutError, match="down 3"):
        await until_done(down, what="down", backoff=NO_WAIT, attempts=3)


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await until_done(broken, what="broken", backoff=NO_WAIT)
    assert calls == 1


async def test_told_to_stop_it_gives_up_at_once_even_while_waiting_out_a_backoff() -> None:
    stop = asyncio.Event()
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            asyncio.get_running_loop().call_soon(stop.set)
        raise TimeoutError("down")

    with pytest.raises(RetriesStopped):
        await until_done(down, what="down", backoff=Backoff(first_s=60, max_s=60), stop=stop)
    assert calls == 2


async def test_once_stopped_a_transient_error_is_not_retried() -> None:
    stop = asyncio.Event()
    stop.set()

    async def down() -> None:
        raise TimeoutError("down")

    with pytest.raises(RetriesStopped):
        await until_done(down, what="down", backoff=NO_WAIT, stop=stop)
