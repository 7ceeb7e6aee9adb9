"""Retry an async operation through transient failures, with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pymongo.errors import DuplicateKeyError, PyMongoError
from redis.exceptions import RedisError

from shared.stripe_gateway import TransientStripeError

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientStripeError,
    PyMongoError,
    RedisError,
    OSError,
    TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, DuplicateKeyError)


class RetriesStopped(BaseException):
    """`until_done` was told to stop retrying (the process is shutting down).

    A BaseException, like asyncio.CancelledError: the work is being given up, it did not fail,
    so it must pass through `except Exception` handlers that would treat it as a failure.
    """


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.2
    max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full jitter over a capped exponential: spreads out retries from many workers."""
        return random.uniform(0, min(self.max_s, self.first_s * 2 ** (attempt - 1)))


async def until_done(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff = Backoff(),
    on_retry: Callable[[BaseException], None] | None = None,
    log_extra: Mapping[str, object] | None = None,
    attempts: int | None = None,
    stop: asyncio.Event | None = None,
) -> T:
    """Run `operation` until it succeeds; transient errors are retried, others propagate.

    By default there is no attempt limit, on purpose: an outage delays the work and never
    drops it. With `attempts`, the last transient error propagates after that many tries.
    Once `stop` is set, a transient error (or one being waited out) raises RetriesStopped.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as error:
            attempt += 1
            if not is_transient(error) or attempt == attempts:
                raise
            if stop is not None and stop.is_set():
                raise RetriesStopped(what) from error
            delay = backoff.delay(attempt)
            if on_retry is not None:
                on_retry(error)
            logger.warning(
                "%s failed; retrying",
                what,
                extra={
                    **(log_extra or {}),
                    "error": str(error),
                    "attempt": attempt,
                    "retryInS": round(delay, 2),
                },
            )
            await _wait_out(delay, stop, what)


async def _wait_out(delay: float, stop: asyncio.Event | None, what: str) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        return
    raise RetriesStopped(what)
