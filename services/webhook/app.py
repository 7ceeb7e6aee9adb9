"""Wires the webhook service: its two apps, the adapters and the background loops (outbox
relay, reconciler).

The public app (PORT) is all the internet reaches: Stripe's deliveries and /healthz. The
internal app (INTERNAL_PORT) serves the payments API, readiness and metrics to the cluster.
The public app owns the adapters and the loops; the internal one uses them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta

from aiohttp import web
from prometheus_client import Counter, Histogram

from services.webhook.api_auth import bearer_token_auth
from services.webhook.api_versions import API_VERSIONS
from services.webhook.checkout_links import CheckoutLinks, Redirects
from services.webhook.duplicate_refunds import DuplicateRefunds, apply_duplicate_refund_event
from services.webhook.events import MalformedEvent, StripeEvent, interpret, metric_label
from services.webhook.payments_api import payments_api_routes
from services.webhook.reconciler import Reconciler
from services.webhook.refund_events import apply_money_back, interpret_money_back
from services.webhook.refund_reconciliation import RefundSettler
from services.webhook.signature import SignatureError, verify
from services.webhook.status_changes import Applied, Result, apply_event
from shared.bus import NotificationBus, connect_redis
from shared.observability import ReadinessCheck, health_routes, liveness_route
from shared.outbox import OutboxRelay
from shared.processed_events import ProcessedEvents
from shared.refunds import RefundBook
from shared.retry import is_transient
from shared.settings import Settings
from shared.store import PaymentStore
from shared.stripe_budget import Priority, StripeBudget
from shared.stripe_gateway import StripeGateway

logger = logging.getLogger(__name__)

DEFAULT_PORT = 9090
WEBHOOK_PATH = "/payment-service/webhook"
MAX_BODY_BYTES = 512 * 1024
# Stripe sends a body in well under a second.
BODY_TIMEOUT_S = 10.0
# Connections the public port holds at once. Each may hold a body of up to MAX_BODY_BYTES
# (1.5 times that in memory while it is read): 75 MiB at most, which fits the pod's 256 Mi
# beside the process's own 90, with room. Stripe keeps far fewer deliveries in flight.
PUBLIC_MOST_CONNECTIONS = 100
INTERNAL_MOST_CONNECTIONS = 1000
PROCESSED_EVENTS_COLLECTION = "processed_events"

EVENTS = Counter("payments_webhook_events_total", "Stripe events received", ["type", "outcome"])
SIGNATURE_FAILURES = Counter("payments_webhook_signature_failures_total", "Deliveries refused")
OVERSIZED = Counter("payments_webhook_oversized_bodies_total", "Bodies refused for their size")
SLOW_BODIES = Counter(
    "payments_webhook_slow_bodies_total", "Bodies not all there within BODY_TIMEOUT_S: 408"
)
LATENCY = Histogram(
    "payments_webhook_request_seconds",
    "Time to answer a webhook delivery",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

STORE = web.AppKey("store", PaymentStore)
PROCESSED = web.AppKey("processed", ProcessedEvents)
BUS = web.AppKey("bus", NotificationBus)
RELAY = web.AppKey("relay", OutboxRelay)
LINKS: web.AppKey[CheckoutLinks | None] = web.AppKey("links")
DUPLICATES: web.AppKey[DuplicateRefunds] = web.AppKey("duplicates")
SECRETS: web.AppKey[list[str]] = web.AppKey("secrets")
BACKGROUND: web.AppKey[dict[str, Callable[[], bool]]] = web.AppKey("background")


def create_app(settings: Settings) -> web.Application:
    """The public app; it starts and stops the adapters and loops the internal app uses."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SECRETS] = settings.webhook_secrets()
    app[BACKGROUND] = {}
    app.cleanup_ctx.append(_adapters(settings))
    app.add_routes([web.post(WEBHOOK_PATH, receive_event), liveness_route()])
    return app


def create_internal_app(service: web.Application, api_tokens: Sequence[str]) -> web.Application:
    """The internal app, serving the adapters of `service` (the public app) while it runs."""
    app = web.Application(middlewares=[bearer_token_auth(api_tokens)])
    app.add_routes(
        [
            *payments_api_routes(lambda: service[STORE], lambda: service.get(LINKS)),
            *health_routes(_readiness_checks(service)),
        ]
    )
    return app


def _readiness_checks(app: web.Application) -> dict[str, ReadinessCheck]:
    async def background_loops() -> None:
        stopped = [name for name, running in app[BACKGROUND].items() if not running()]
        if stopped:
            raise RuntimeError(f"not running: {', '.join(stopped)}")

    return {
        "mongodb": lambda: app[STORE].ping(),
        "redis": lambda: app[BUS].ping(),
        "background": background_loops,
    }


def _adapters(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE] = PaymentStore.connect(
            settings.effective_mongodb_uri(), settings.mongodb_database, settings.mongodb_collection
        )
        processed = app[PROCESSED] = ProcessedEvents(
            store.sibling(PROCESSED_EVENTS_COLLECTION),
            timedelta(days=settings.processed_events_retention_days),
        )
        app[BUS] = NotificationBus(connect_redis(settings.redis_url))
        try:
            await store.ensure_indexes()
            await processed.ensure_indexes()
        except Exception as error:  # MongoDB may come up after us: readiness will say so
            logger.warning("could not create indexes at start", extra={"error": str(error)})
        relay = app[RELAY] = OutboxRelay(store, app[BUS], settings.kafka_bootstrap_servers)
        gateway = _stripe_gateway(settings)
        links = app[LINKS] = _checkout_links(settings, store, gateway, app[BUS])
        loops = [asyncio.create_task(relay.run(), name="outbox-relay")]
        app[BACKGROUND]["outbox-relay"] = lambda: relay.running
        if gateway is not None:
            reconciler = _reconciler(settings, store, gateway, relay)
            loops.append(asyncio.create_task(reconciler.run(settings.reconcile_interval_s)))
            app[BACKGROUND]["reconciler"] = lambda: reconciler.running
            duplicates = app[DUPLICATES] = await _duplicate_refunds(store, gateway, app[BUS])
            loops.append(asyncio.create_task(duplicates.run(settings.reconcile_interval_s)))
            app[BACKGROUND]["duplicate-refunds"] = lambda: duplicates.running
        yield
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await relay.close()
        if links is not None:
            await links.close()
        if DUPLICATES in app:
            await app[DUPLICATES].close()
        if gateway is not None:
            await gateway.close()
        await app[BUS].close()
        await store.close()

    return context


def _stripe_gateway(settings: Settings) -> StripeGateway | None:
    if settings.stripe_secret_key is None:
        logger.warning("STRIPE_SECRET_KEY is not set: reconciliation with Stripe is off")
        return None
    return StripeGateway(
        settings.stripe_secret_key.get_secret_value(),
        settings.stripe_api_base,
        budget=StripeBudget.from_settings(settings),
    )


def _checkout_links(
    settings: Settings, store: PaymentStore, gateway: StripeGateway | None, bus: NotificationBus
) -> CheckoutLinks | None:
    if gateway is None:
        return None
    redirects = Redirects(settings.success_redirect_url, settings.cancel_redirect_url)
    return CheckoutLinks(store, gateway, bus, redirects)


async def _duplicate_refunds(
    store: PaymentStore, gateway: StripeGateway, bus: NotificationBus
) -> DuplicateRefunds:
    owner = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    duplicates = DuplicateRefunds(store, gateway, bus, store.lease("duplicate-refunds", owner, 120))
    try:
        await duplicates.ensure_indexes()
    except Exception as error:  # MongoDB may come up after us: readiness will say so
        logger.warning("could not create indexes at start", extra={"error": str(error)})
    return duplicates


def _reconciler(
    settings: Settings, store: PaymentStore, gateway: StripeGateway, relay: OutboxRelay
) -> Reconciler:
    lease_ttl_s = max(60.0, settings.reconcile_interval_s * 2)
    housekeeping = gateway.with_priority(Priority.HOUSEKEEPING)  # after riders' calls
    return Reconciler(
        store,
        housekeeping,
        store.lease(
            "reconciler",
            owner=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
            ttl_s=lease_ttl_s,
        ),
        relay.publish_soon,
        settle_after_s=settings.reconcile_after_s,
        batch=settings.reconcile_batch,
        rate_per_s=settings.reconcile_rate_per_s,
        renew_every_s=lease_ttl_s / 3,
        refunds=RefundSettler(
            RefundBook(store),
            housekeeping,
            relay.publish_soon,
            settle_after_s=settings.reconcile_after_s,
            batch=settings.reconcile_batch,
        ),
    )


async def receive_event(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        return await _receive_event(request)
    finally:
        LATENCY.observe(time.perf_counter() - started)


async def _receive_event(request: web.Request) -> web.Response:
    app = request.app
    payload = await _body_within_limit(request)
    if payload is None:
        OVERSIZED.inc()
        refusal = _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        refusal.force_close()  # the rest of the body is never read: the connection ends here
        return refusal
    secrets: list[str] = app[SECRETS]
    try:
        verify(payload, request.headers.get("Stripe-Signature"), secrets)
    except SignatureError as error:
        SIGNATURE_FAILURES.inc()
        logger.warning("webhook signature refused", extra={"reason": str(error)})
        return _error(400, f"invalid signature: {error}")
    try:
        event = StripeEvent.from_body(payload)
        update = interpret(event)
        money_back = interpret_money_back(event)
    except MalformedEvent as error:
        EVENTS.labels("unknown", "malformed").inc()
        logger.warning("signed webhook body is not a Stripe event", extra={"error": str(error)})
        return _error(400, f"malformed event: {error}")
    API_VERSIONS.note(event.api_version, event.id, event.type)
    event_label = metric_label(event.type)
    change = update or money_back
    if change is None:
        EVENTS.labels(event_label, "ignored").inc()
        return web.json_response({"received": True, "result": "ignored"})
    log = {"rideId": change.ride_id, "eventId": event.id, "eventType": event.type}
    try:
        if money_back is not None:
            applied = await apply_duplicate_refund_event(
                app[STORE], app[PROCESSED], money_back
            ) or await apply_money_back(app[STORE], app[PROCESSED], money_back)
        else:
            assert update is not None
            applied = await apply_event(
                app[STORE], app[PROCESSED], update, source=f"webhook:{event.type}"
            )
    except Exception as error:
        if not is_transient(error):
            raise
        EVENTS.labels(event_label, "store_failed").inc()
        logger.error(
            "could not store the change; Stripe will retry", extra={**log, "error": str(error)}
        )
        return _error(503, "payment store unavailable, retry later")
    EVENTS.labels(event_label, applied.result.value).inc()
    if applied.result is Result.UNKNOWN_PAYMENT:
        logger.warning("event for an unknown payment", extra=log)
    elif applied.payment is None:
        logger.info("webhook event already handled", extra={**log, "result": applied.result.value})
    else:
        log["rideId"] = applied.payment.ride_id
        logger.info(
            "webhook event handled",
            extra={**log, "result": applied.result.value, "status": applied.payment.status.value},
        )
    if applied.result is Result.APPLIED and applied.payment is not None:
        app[RELAY].publish_soon(applied.payment)
        _expire_other_sessions_if_paid_earlier(app, applied)
    if applied.result is Result.DUPLICATE_CHARGE and applied.payment and DUPLICATES in app:
        app[DUPLICATES].refund_soon(applied.payment)  # the sweep does it otherwise
    return web.json_response({"received": True, "result": applied.result.value})


def _expire_other_sessions_if_paid_earlier(app: web.Application, applied: Applied) -> None:
    """A ride paid on an earlier attempt: its other sessions are expired now (the reconciler
    does it otherwise)."""
    links = app.get(LINKS)
    if links is not None and applied.payment is not None and applied.payment.sessions_to_expire:
        links.expire_other_sessions_soon(applied.payment)


async def _body_within_limit(request: web.Request) -> bytes | None:
    """The body, or None when it is over MAX_BODY_BYTES: then it is not read at all when its
    Content-Length says so, and read no further than the limit when it is chunked. A body not
    all there within BODY_TIMEOUT_S ends the connection with a 408."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return None
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None
    except TimeoutError:
        SLOW_BODIES.inc()
        raise web.HTTPRequestTimeout(
            text="the request body did not arrive in time", headers={"Connection": "close"}
        ) from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
