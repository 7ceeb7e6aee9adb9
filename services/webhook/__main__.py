"""`python -m services.webhook`: serve Stripe webhooks until SIGTERM."""

from __future__ import annotations

import sys

from aiohttp import web

from services.webhook.app import DEFAULT_PORT, create_app
from shared.observability import configure_logging
from shared.runtime import prepare_process
from shared.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
        settings.require("stripe_webhook_secret", by="webhook")
    except ConfigError as error:
        sys.exit(f"webhook: {error}")
    configure_logging("webhook", settings.log_level)
    prepare_process(settings.event_loop)
    web.run_app(
        create_app(settings),
        port=settings.http_port(DEFAULT_PORT),
        access_log=None,
        print=None,
        shutdown_timeout=20,
    )


if __name__ == "__main__":
    main()
