"""`python -m services.notifier`: serve the WebSocket until SIGTERM, then drain the sockets."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from services.notifier.app import DEFAULT_PORT, create_app
from shared.observability import configure_logging
from shared.runtime import prepare_process
from shared.settings import ConfigError, load_settings

logger = logging.getLogger(__name__)


def main() -> None:
    try:
        settings = load_settings()
        configure_logging("notifier", settings.log_level)
        prepare_process(settings.event_loop)
        app = create_app(settings)
    except ConfigError as error:
        sys.exit(f"notifier: {error}")
    port = settings.http_port(DEFAULT_PORT)
    logger.info("notifier listening", extra={"port": port})
    # run_app turns SIGTERM into a graceful shutdown: on_shutdown closes the sockets with 1001.
    web.run_app(app, port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
