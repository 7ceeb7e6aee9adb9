"""SIGTERM within a bound: stop taking events and stop retrying at once, give the events in
flight SHUTDOWN_GRACE_S to finish, then abandon them.

An abandoned event is never marked done (see offsets.py), so its offset is not committed and
the next owner of the partition handles it again; handling is idempotent, so whatever the
abandoned attempt had done already is resumed, not repeated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

logger = logging.getLogger(__name__)


class WorkAbandoned(Exception):
    """The work ran past the shutdown's grace period and was cancelled."""


class Shutdown:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.stopping = asyncio.Event()
        self._abandoned = False
        self._scopes: set[asyncio.Timeout] = set()

    def begin(self) -> None:
        if self.stopping.is_set():
            return
        logger.info("shutting down: no new events, no more retries", extra={"graceS": self.grace_s})
        self.stopping.set()
        asyncio.get_running_loop().call_later(self.grace_s, self._abandon)

    @asynccontextmanager
    async def abandonable(self) -> AsyncIterator[None]:
        """Run the block; cancel it with WorkAbandoned if it outlasts the grace period."""
        scope = asyncio.timeout(None)
        try:
            async with scope:
                self._scopes.add(scope)
                if self._abandoned:
                    scope.reschedule(asyncio.get_running_loop().time())
                yield
        except TimeoutError as error:
            if scope.expired():
                raise WorkAbandoned("abandoned at shutdown") from error
            raise
        finally:
            self._scopes.discard(scope)

    def _abandon(self) -> None:
        self._abandoned = True
        if self._scopes:
            logger.warning(
                "grace period over: abandoning the events in flight",
                extra={"events": len(self._scopes)},
            )
        now = asyncio.get_running_loop().time()
        for scope in self._scopes:
            scope.reschedule(now)
