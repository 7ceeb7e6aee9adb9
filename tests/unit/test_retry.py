from __future__ import annotations

import pytest

from shared.retry import Backoff, until_done

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
