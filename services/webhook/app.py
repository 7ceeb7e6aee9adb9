"""Wires the webhook service: routes, adapters, and notifications published after the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import Counter, Histogram

from services.webhook.events import MalformedEvent, StripeEvent, interpret
from services.webhook.signature import SignatureError, verify
from services.webhook.status_changes import Result, apply_update
from shared.announcements import announce_status
from shared.bus import NotificationBus, connect_redis
from shared.observability import health_routes
from shared.retry import Backoff, is_transient
from shared.settings import Settings
from shared.store import Payment, PaymentStore, public_view

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9090
WEBHOOK_PATH = "/payment-service/webhook"
MAX_BODY_BYTES = 512 * 1024
PUBLISH_ATTEMPTS = 6

EVENTS = Counter("payments_webhook_events_total", "Stripe events received", ["type", "outcome"])
SIGNATURE_FAILURES = Counter("payments_webhook_signature_failures_total", "Deliveries refused")
LATENCY = Histogram(
    "payments_webhook_request_seconds",
    "Time to answer a webhook delivery",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

STORE = web.AppKey("store", PaymentStore)
BUS = web.AppKey("bus", NotificationBus)
SECRETS: web.AppKey[list[str]] = web.AppKey("secrets")
PUBLISHING: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("publishing")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SECRETS] = settings.webhook_secrets()
    app[PUBLISHING] = set()
    app.cleanup_ctx.append(_adapters(settings))
    app.on_shutdown.append(_finish_publishing)
    app.add_routes(
        [
            web.post(WEBHOOK_PATH, receive_event),
            web.get("/payment-service/payments/{rideId}", get_payment),
            *health_routes(
                {"mongodb": lambda: app[STORE].ping(), "redis": lambda: app[BUS].ping()}
            ),
        ]
    )
    return app


def _adapters(settings: Settings):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        app[STORE] = PaymentStore.connect(
            settings.effective_mongodb_uri(), settings.mongodb_database, settings.mongodb_collection
        )
        app[BUS] = NotificationBus(connect_redis(settings.redis_url))
        try:
            await app[STORE].ensure_indexes()
        except Exception as error:  # MongoDB may come up after us: readiness will say so
            logger.warning("could not create indexes at start", extra={"error": str(error)})
        yield
        await app[BUS].close()
        await app[STORE].close()

    return context


async def receive_event(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        return await _receive_event(request)
    finally:
        LATENCY.observe(time.perf_counter() - started)


async def _receive_event(request: web.Request) -> web.Response:
    app = request.app
    payload = await request.read()
    secrets: list[str] = app[SECRETS]
    try:
        verify(payload, request.headers.get("Stripe-Signature"), secrets)
    except SignatureError as error:
        SIGNATURE_FAILURES.inc()
        logger.warning("webhook signature refused", extra={"reason": str(error)})
        return _error(400, f"invalid signature: {error}")
    try:
        event = StripeEvent.parse(json.loads(payload))
        update = interpret(event)
    except (ValueError, MalformedEvent) as error:
        EVENTS.labels("unknown", "malformed").inc()
        logger.warning("signed webhook body is not a Stripe event", extra={"error": str(error)})
        return _error(400, f"malformed event: {error}")
    if update is None:
        EVENTS.labels(event.type, "ignored").inc()
        return web.json_response({"received": True, "result": "ignored"})
    log = {"rideId": update.ride_id, "eventId": event.id, "eventType": event.type}
    try:
        applied = await apply_update(app[STORE], update, source=f"webhook:{event.type}")
    except Exception as error:
        if not is_transient(error):
            raise
        EVENTS.labels(event.type, "store_failed").inc()
        logger.error(
            "could not store the change; Stripe will retry", extra={**log, "error": str(error)}
        )
        return _error(503, "payment store unavailable, retry later")
    EVENTS.labels(event.type, applied.result.value).inc()
    if applied.result is Result.UNKNOWN_PAYMENT:
        logger.warning("event for an unknown payment", extra=log)
    else:
        assert applied.payment is not None
        log["rideId"] = applied.payment.ride_id
        logger.info(
            "webhook event handled",
            extra={**log, "result": applied.result.value, "status": applied.payment.status.value},
        )
    if applied.result is Result.APPLIED and applied.payment is not None:
        _publish_later(app, applied.payment)
    return web.json_response({"received": True, "result": applied.result.value})


def _publish_later(app: web.Application, payment: Payment) -> None:
    """Notify after answering Stripe: a Redis hiccup must not turn a stored change into a 5xx."""
    task = asyncio.create_task(_publish_with_retries(app[BUS], payment))
    app[PUBLISHING].add(task)
    task.add_done_callback(app[PUBLISHING].discard)


async def _publish_with_retries(bus: NotificationBus, payment: Payment) -> None:
    backoff = Backoff(first_s=0.1, max_s=2.0)
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await announce_status(bus, payment)
            return
        except Exception as error:
            logger.warning(
                "status notification failed",
                extra={"rideId": payment.ride_id, "attempt": attempt, "error": str(error)},
            )
            await asyncio.sleep(backoff.delay(attempt))
    logger.error("status notification given up", extra={"rideId": payment.ride_id})


async def _finish_publishing(app: web.Application) -> None:
    pending: set[asyncio.Task[None]] = app[PUBLISHING]
    if pending:
        await asyncio.wait(pending, timeout=10)


async def get_payment(request: web.Request) -> web.Response:
    ride_id = request.match_info["rideId"]
    document = await request.app[STORE].find_document(ride_id)
    if document is None:
        return _error(404, f"no payment for ride {ride_id}")
    return web.json_response(public_view(document))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
