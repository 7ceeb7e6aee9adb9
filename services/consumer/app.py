"""Wires the consumer: the Faust app, its agent, the adapters and the health server."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
from aiohttp import web
from mode import Service

from services.consumer.fetched_records import guard_the_fetcher
from services.consumer.handler import RideEventHandler, named_ride_id
from services.consumer.lag import record_lag
from services.consumer.offsets import LedgerApp
from services.consumer.orphans import OrphanSweeper
from services.consumer.process import CheckoutSettings, PaymentCreator
from services.consumer.records import DEAD_LETTER_TOPIC, SOURCE_TOPIC, DeadLetter, IncomingRecord
from services.consumer.refund_agent import add_refund_agent
from services.consumer.shutdown import Shutdown, WorkAbandoned
from shared.bus import NotificationBus, connect_redis
from shared.http_serving import IDLE_TIMEOUT_S, start_site
from shared.observability import flag_check, health_routes
from shared.retry import RetriesStopped, until_done
from shared.settings import Settings
from shared.store import PaymentStore
from shared.stripe_budget import StripeBudget
from shared.stripe_gateway import StripeGateway

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6066
GROUP_ID = "payments"
LAG_EVERY_S = 5.0
HEALTH_MOST_CONNECTIONS = 100  # probes and Prometheus


class ConsumerRuntime(Service):
    """The adapters and the health server; started before the Faust app, stopped after it."""

    def __init__(
        self,
        settings: Settings,
        dead_letters: faust.TopicT,
        shutdown: Shutdown,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.shutdown = shutdown
        self.kafka_joined = False
        self.store_ready = asyncio.Event()
        self.agent_crashed = False
        self.record_lag: Callable[[], None] = lambda: None  # set once the Faust app exists
        self._dead_letters = dead_letters
        self._runner: web.AppRunner | None = None
        self.store = PaymentStore.connect(
            settings.effective_mongodb_uri(), settings.mongodb_database, settings.mongodb_collection
        )
        self.bus = NotificationBus(connect_redis(settings.redis_url))
        assert settings.stripe_secret_key is not None
        self.gateway = StripeGateway(
            settings.stripe_secret_key.get_secret_value(),
            settings.stripe_api_base,
            budget=StripeBudget.from_settings(settings),
            max_in_flight=settings.consumer_concurrency,
        )
        creator = PaymentCreator(
            self.store,
            self.gateway,
            self.bus,
            CheckoutSettings(
                settings.payment_currency,
                settings.success_redirect_url,
                settings.cancel_redirect_url,
            ),
        )
        self.handler = RideEventHandler(
            creator, self.send_dead_letter, stop_retrying=shutdown.stopping
        )
        self.orphans = OrphanSweeper(
            self.store,
            creator,
            self.store.lease(
                "orphan-sweeper",
                owner=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
                ttl_s=max(60.0, settings.orphan_check_interval_s * 2),
            ),
            orphan_after_s=settings.orphan_after_s,
        )

    async def on_start(self) -> None:
        await self._start_health_server()
        self.add_future(self._prepare_store())
        self.add_future(self._sweep_orphans())
        self.add_future(self._export_lag())

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.gateway.close()
        await self.bus.close()
        await self.store.close()

    async def send_dead_letter(self, letter: DeadLetter) -> None:
        sent = await self._dead_letters.send(
            key=letter.key, value=letter.value, headers=letter.headers, force=True
        )
        await sent  # wait for the broker's ack before the source record is acknowledged

    @contextmanager
    def crash_watch(self) -> Iterator[None]:
        """A crashed agent instance leaves its record neither processed nor dead-lettered, and
        Faust hands it out again only after a restart: from then on the worker is not ready.
        (The handler dead-letters every record it cannot process, so only a bug gets here.)"""
        try:
            yield
        except Exception as error:
            self.agent_crashed = True
            logger.error("agent crashed; restart this worker", exc_info=error)
            raise

    async def _prepare_store(self) -> None:
        await until_done(self.store.ensure_indexes, what="creating MongoDB indexes")
        self.store_ready.set()

    async def _export_lag(self) -> None:
        while True:
            await asyncio.sleep(LAG_EVERY_S)
            try:
                self.record_lag()
            except Exception as error:  # Faust's consumer between assignments: next time
                logger.debug("consumer lag not recorded", extra={"error": str(error)})

    async def _sweep_orphans(self) -> None:
        await self.store_ready.wait()
        await self.orphans.run(self.settings.orphan_check_interval_s)

    async def _start_health_server(self) -> None:
        checks = {
            "kafka": flag_check("kafka consumer group membership", lambda: self.kafka_joined),
            "agent": flag_check("the create_payments agent", lambda: not self.agent_crashed),
            "mongodb": self.store.ping,
            "mongodb-indexes": flag_check("index creation", self.store_ready.is_set),
            "redis": self.bus.ping,
            "orphan-sweeper": flag_check(
                "the orphaned-payment sweeper", lambda: self.orphans.running
            ),
        }
        web_app = web.Application()
        web_app.add_routes(health_routes(checks))
        self._runner = web.AppRunner(web_app, access_log=None, keepalive_timeout=IDLE_TIMEOUT_S)
        port = self.settings.http_port(DEFAULT_PORT)
        await start_site(
            self._runner,
            port,
            most_connections=HEALTH_MOST_CONNECTIONS,
            name="consumer",
            host=self.settings.listen_host(),
        )
        logger.info("health server listening", extra={"port": port})


class ConsumerApp(LedgerApp):
    """Starts the bounded shutdown before Faust waits for the events in flight."""

    def __init__(self, shutdown: Shutdown, *args: Any, **kwargs: Any) -> None:
        self.shutdown = shutdown
        super().__init__(*args, **kwargs)

    async def on_stop(self) -> None:
        self.shutdown.begin()
        await super().on_stop()


def create_app(settings: Settings) -> tuple[faust.App, ConsumerRuntime]:
    guard_the_fetcher()
    shutdown = Shutdown(settings.shutdown_grace_s)
    app = ConsumerApp(
        shutdown,
        GROUP_ID,
        broker=[
            f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")
        ],
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.kafka_session_timeout_s / 5),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        web_enabled=False,
        datadir=settings.faust_datadir,
        producer_acks=-1,
    )
    source = app.topic(SOURCE_TOPIC, key_serializer="raw", value_serializer="raw")
    dead_letters = app.topic(DEAD_LETTER_TOPIC, key_serializer="raw", value_serializer="raw")
    runtime = ConsumerRuntime(settings, dead_letters, shutdown)

    async def handle(
        event: faust.EventT[bytes], process: Callable[[IncomingRecord], Awaitable[object]]
    ) -> None:
        """Process one event and mark it done; one abandoned at shutdown is never marked."""
        # Before any await: the ledger relies on events being taken in offset order.
        progress = app.offsets.taken(event.message)
        record = _incoming(event)
        try:
            async with shutdown.abandonable():
                await process(record)
        except (WorkAbandoned, RetriesStopped) as reason:
            logger.warning(
                "record left to the partition's next owner",
                extra={
                    "rideId": named_ride_id(record.value or b""),
                    "source": record.position,
                    "reason": str(reason),
                },
            )
            return
        progress.done(event.message.offset)

    async def consume(
        stream: faust.StreamT[bytes], process: Callable[[IncomingRecord], Awaitable[object]]
    ) -> None:
        """Every agent's loop: the offset ledger, the bounded shutdown, the crash watch."""
        with runtime.crash_watch():
            async for event in stream.events():
                if not shutdown.stopping.is_set():
                    await handle(event, process)

    @app.agent(source, concurrency=settings.consumer_concurrency)
    async def create_payments(stream: faust.StreamT[bytes]) -> None:
        await runtime.store_ready.wait()
        await consume(stream, runtime.handler.handle)

    add_refund_agent(app, runtime, consume, settings.consumer_concurrency)

    runtime.record_lag = lambda: record_lag(app, SOURCE_TOPIC)

    @app.on_partitions_assigned.connect
    async def _joined(_app: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        runtime.kafka_joined = True

    return app, runtime


def _incoming(event: faust.EventT[bytes]) -> IncomingRecord:
    message = event.message
    headers = message.headers or []
    pairs: Iterable[tuple[str, bytes]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    return IncomingRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=[(name, value or b"") for name, value in pairs],
    )
