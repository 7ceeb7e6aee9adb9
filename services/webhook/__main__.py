"""`python -m services.webhook`: serve Stripe webhooks (PORT) and the internal API
(INTERNAL_PORT) until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from services.webhook.app import (
    DEFAULT_PORT,
    INTERNAL_MOST_CONNECTIONS,
    PUBLIC_MOST_CONNECTIONS,
    create_app,
    create_internal_app,
)
from shared.http_serving import IDLE_TIMEOUT_S, start_site
from shared.observability import configure_logging
from shared.runtime import prepare_process
from shared.settings import ConfigError, Settings, load_settings

# In-flight requests finish within this after SIGTERM (the pod's grace period is 30 s).
SHUTDOWN_TIMEOUT_S = 20.0


def main() -> None:
    try:
        settings = load_settings()
        settings.require("stripe_webhook_secret", by="webhook")
        settings.require_api_tokens()
    except ConfigError as error:
        sys.exit(f"webhook: {error}")
    configure_logging("webhook", settings.log_level)
    prepare_process(settings.event_loop)
    asyncio.run(serve(settings))


async def serve(settings: Settings) -> None:
    """Both ports until SIGTERM or SIGINT. Then the internal port closes, and the public one
    stops taking deliveries, lets those in flight finish and closes the adapters."""
    public = create_app(settings)
    serving = [
        (public, settings.http_port(DEFAULT_PORT), PUBLIC_MOST_CONNECTIONS, "webhook"),
        (
            create_internal_app(public, settings.api_tokens()),
            settings.internal_port,
            INTERNAL_MOST_CONNECTIONS,
            "webhook-internal",
        ),
    ]
    runners: list[web.AppRunner] = []
    try:
        # The public app first: it starts the adapters.
        for app, port, most_connections, name in serving:
            runner = web.AppRunner(
                app,
                access_log=None,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                keepalive_timeout=IDLE_TIMEOUT_S,
                # A body left unread (refused as too large) is not read on and discarded for
                # aiohttp's default 10 s: its connection closes once the answer is sent.
                lingering_time=0,
            )
            runners.append(runner)
            await start_site(
                runner,
                port,
                most_connections=most_connections,
                name=name,
                host=settings.listen_host(),
            )
        await _signalled(signal.SIGTERM, signal.SIGINT)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def _signalled(*signals: signal.Signals) -> None:
    received = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in signals:
        loop.add_signal_handler(signum, received.set)
    await received.wait()


if __name__ == "__main__":
    main()
