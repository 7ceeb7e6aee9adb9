"""Which local sockets belong to which user, and the Redis subscriptions that follow them.

The process subscribes to a user's channel when that user's first socket here registers and
unsubscribes when the last one leaves, so a replica only hears about the users it serves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError

from services.notifier import metrics
from shared.bus import StoredMessage

logger = logging.getLogger(__name__)

CATCH_UP_CONCURRENCY = 32


class Recipient(Protocol):
    """A registered socket, as the hub sees it."""

    def push(self, stored: StoredMessage) -> None:
        """Queue a live message without waiting."""

    async def catch_up(self) -> bool:
        """Send what the socket missed from history; False when Redis could not be reached."""


class Subscriptions(Protocol):
    """The process's Redis subscriber (shared.bus.UserSubscriber)."""

    @property
    def connected(self) -> asyncio.Event: ...

    @property
    def users(self) -> frozenset[str]: ...

    async def subscribe(self, user_id: str) -> None: ...

    async def unsubscribe(self, user_id: str) -> None: ...


class Hub:
    def __init__(self, subscriptions: Subscriptions) -> None:
        self._subscriptions = subscriptions
        self._sockets: dict[str, set[Recipient]] = {}
        # Keeps each user's SUBSCRIBE and UNSUBSCRIBE in the order the sockets came and went.
        self._lock = asyncio.Lock()

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._sockets)

    def sockets_of(self, user_id: str) -> frozenset[Recipient]:
        return frozenset(self._sockets.get(user_id, ()))

    def socket_count(self, user_id: str) -> int:
        return len(self._sockets.get(user_id, ()))

    async def add(self, user_id: str, recipient: Recipient) -> None:
        sockets = self._sockets.setdefault(user_id, set())
        sockets.add(recipient)
        if len(sockets) == 1:
            metrics.REGISTERED_USERS.inc()
            await self._follow(user_id)

    async def remove(self, user_id: str, recipient: Recipient) -> None:
        sockets = self._sockets.get(user_id)
        if sockets is None or recipient not in sockets:
            return
        sockets.remove(recipient)
        if not sockets:
            del self._sockets[user_id]
            metrics.REGISTERED_USERS.dec()
            await self._follow(user_id)

    async def deliver(self, user_id: str, stored: StoredMessage) -> None:
        """Fan a live message out to the user's sockets here; never waits on a socket."""
        for recipient in list(self._sockets.get(user_id, ())):
            recipient.push(stored)

    async def resubscribed(self) -> None:
        """After the subscriber (re)connected: replay to every socket what it missed.

        Raises a Redis ConnectionError when Redis could not be reached for some socket, so that
        the subscriber reconnects and this runs again (replaying twice sends nothing twice).
        Any other failure is that socket's alone: logged, and never a reason to run again.
        """
        recipients = [recipient for sockets in self._sockets.values() for recipient in sockets]
        limit = asyncio.Semaphore(CATCH_UP_CONCURRENCY)

        async def catch_up(recipient: Recipient) -> bool:
            async with limit:
                return await recipient.catch_up()

        results = await asyncio.gather(
            *(catch_up(recipient) for recipient in recipients), return_exceptions=True
        )
        for error in (result for result in results if isinstance(result, Exception)):
            logger.error("a socket's replay failed", exc_info=error)
        failed = results.count(False)
        if failed:
            raise RedisConnectionError(f"could not replay history to {failed} sockets")

    async def _follow(self, user_id: str) -> None:
        """Make the subscription match whether the user still has sockets here."""
        async with self._lock:
            wanted = user_id in self._sockets
            if wanted == (user_id in self._subscriptions.users):
                return
            await self._apply(user_id, wanted)
            metrics.SUBSCRIBED_CHANNELS.set(len(self._subscriptions.users))

    async def _apply(self, user_id: str, subscribe: bool) -> None:
        if subscribe:
            await self._subscriptions.subscribe(user_id)
        else:
            await self._subscriptions.unsubscribe(user_id)
