"""`python -m services.notifier`: serve the WebSocket until SIGTERM, then drain the sockets."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from services.notifier.app import DEFAULT_PORT, create_app
from shared.http_serving import IDLE_TIMEOUT_S
from shared.observability import configure_logging
from shared.runtime import prepare_process
from shared.settings import ConfigError, load_settings

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        settings = load_settings()
        settings.require_notifier_auth()
        configure_logging("notifier", settings.log_level)
        prepare_process(settings.event_loop)
        app = create_app(settings)
    except ConfigError as error:
        sys.exit(f"notifier: {error}")
    host, port = settings.listen_host(), settings.http_port(DEFAULT_PORT)
    logger.info("notifier listening", extra={"host": host or "*", "port": port})
    # run_app turns SIGTERM into a graceful shutdown: on_shutdown closes the sockets with 1001.
    # Sockets have their own limits (NOTIFIER_MAX_SOCKETS); a connection that never upgrades
    # is closed when idle like any other.
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=None,
        keepalive_timeout=IDLE_TIMEOUT_S,
    )


if __name__ == "__main__":
    main()
