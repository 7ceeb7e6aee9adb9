"""Wires the notifier: the WebSocket route, the Redis parts and a graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import WSCloseCode, web

from services.notifier import metrics
from services.notifier.auth import TokenVerifier, verifier_from_settings
from services.notifier.connection import Connection, SocketPolicy
from services.notifier.hub import Hub
from shared.bus import NotificationBus, StoredMessage, UserSubscriber, connect_redis
from shared.observability import ReadinessCheck, health_routes
from shared.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9091
SOCKET_PATH = "/payment-ws"
HEARTBEAT_S = 20.0
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DrainPolicy:
    """How shutdown closes sockets: in batches, so clients reconnect elsewhere gradually."""

    batch_size: int = 500
    pause_s: float = 0.25


class Notifier:
    """This process's sockets and Redis parts, opened and closed with the application."""

    def __init__(
        self,
        redis_url: str,
        verifier: TokenVerifier | None,
        policy: SocketPolicy,
        drain: DrainPolicy,
    ) -> None:
        self._redis_url = redis_url
        self._verifier = verifier
        self._policy = policy
        self._drain = drain
        self.sockets: set[Connection] = set()
        self.draining = False
        self._parts: tuple[NotificationBus, UserSubscriber, Hub] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._connections_made = 0

    @property
    def bus(self) -> NotificationBus:
        return self._started()[0]

    @property
    def subscriber(self) -> UserSubscriber:
        return self._started()[1]

    @property
    def hub(self) -> Hub:
        return self._started()[2]

    def _started(self) -> tuple[NotificationBus, UserSubscriber, Hub]:
        if self._parts is None:
            raise RuntimeError("the notifier has not started")
        return self._parts

    async def redis_parts(self, _: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the Redis client, the bus and the subscriber's listening task."""
        if self._verifier is None:
            logger.warning(
                "NOTIFIER_JWT_SECRET and NOTIFIER_JWT_PUBLIC_KEY are not set: any client may "
                "register as any user (acceptable in development only)"
            )
        bus = NotificationBus(connect_redis(self._redis_url))
        subscriptions = connect_redis(self._redis_url, retry=False)
        subscriber = UserSubscriber(subscriptions, self._deliver, self._resubscribed)
        self._parts = (bus, subscriber, Hub(subscriber))
        metrics.REDIS_CONNECTED.set_function(lambda: float(subscriber.connected.is_set()))
        self._listener = asyncio.create_task(subscriber.run(), name="redis-subscriber")
        yield
        self._listener.cancel()
        await asyncio.gather(self._listener, return_exceptions=True)
        await bus.close()
        await subscriptions.aclose()

    async def _deliver(self, user_id: str, stored: StoredMessage) -> None:
        await self.hub.deliver(user_id, stored)

    async def _resubscribed(self) -> None:
        self._connections_made += 1
        if self._connections_made > 1:
            metrics.REDIS_RECONNECTS.inc()
            logger.info("redis subscriber connected again; replaying what sockets missed")
        await self.hub.resubscribed()

    async def handle_socket(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            raise web.HTTPServiceUnavailable(text="shutting down; connect again")
        socket = web.WebSocketResponse(
            heartbeat=HEARTBEAT_S, compress=False, max_msg_size=MAX_MESSAGE_BYTES
        )
        await socket.prepare(request)
        connection = Connection(socket, self.bus, self.hub, self._verifier, self._policy)
        if len(self.sockets) >= self._policy.max_sockets:
            logger.warning(
                "refusing a socket: this process is full", extra={"sockets": len(self.sockets)}
            )
            why = "this server holds too many sockets; try again later"
            await connection.refuse(why, WSCloseCode.TRY_AGAIN_LATER, "process_limit")
            return socket
        self.sockets.add(connection)
        metrics.CONNECTIONS.inc()
        try:
            await connection.serve(request.query)
        finally:
            self.sockets.discard(connection)
            metrics.CONNECTIONS.dec()
        return socket

    async def close_sockets(self, _: web.Application) -> None:
        """on_shutdown: turn unready, then close sockets with 1001 one batch at a time."""
        self.draining = True
        sockets = list(self.sockets)
        logger.info("closing sockets for shutdown", extra={"sockets": len(sockets)})
        closing: list[asyncio.Task[None]] = []
        for start in range(0, len(sockets), self._drain.batch_size):
            if start:
                await asyncio.sleep(self._drain.pause_s)
            batch = sockets[start : start + self._drain.batch_size]
            closing += [c.close_soon(WSCloseCode.GOING_AWAY, "server shutting down") for c in batch]
        await asyncio.gather(*closing, return_exceptions=True)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        async def redis() -> None:
            await self.bus.ping()

        async def subscriber() -> None:
            if self._listener is None or self._listener.done():
                raise RuntimeError("the redis subscriber is not running")
            if not self.subscriber.connected.is_set():
                raise RuntimeError("the redis subscriber is not connected")

        async def accepting() -> None:
            if self.draining:
                raise RuntimeError("draining for shutdown")

        return {"redis": redis, "redis-subscriber": subscriber, "accepting": accepting}


NOTIFIER = web.AppKey("notifier", Notifier)


def create_app(
    settings: Settings,
    *,
    policy: SocketPolicy | None = None,
    drain: DrainPolicy | None = None,
) -> web.Application:
    """The notifier's application; raises ConfigError when the JWT key is unusable."""
    notifier = Notifier(
        settings.redis_url,
        verifier_from_settings(settings),
        policy or SocketPolicy.from_settings(settings),
        drain or DrainPolicy(),
    )
    # aiohttp rounds timers over 5 s up to whole seconds, so with thousands of sockets every
    # heartbeat due in one second fires at once and stalls the loop (docs/benchmarks.md).
    app = web.Application(handler_args={"timeout_ceil_threshold": 60})
    app[NOTIFIER] = notifier
    app.cleanup_ctx.append(notifier.redis_parts)
    app.on_shutdown.append(notifier.close_sockets)
    app.add_routes(
        [web.get(SOCKET_PATH, notifier.handle_socket), *health_routes(notifier.readiness_checks())]
    )
    return app
