"""`python -m services.consumer`: run the Faust worker until SIGTERM."""

from __future__ import annotations

import sys

import faust

from services.consumer.app import create_app
from shared.observability import configure_logging
from shared.runtime import prepare_process
from shared.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
        settings.require("stripe_secret_key", by="consumer")
    except ConfigError as error:
        sys.exit(f"consumer: {error}")
    configure_logging("consumer", settings.log_level)
    prepare_process(settings.event_loop)
    app, runtime = create_app(settings)
    worker = faust.Worker(
        app,
        runtime,
        loglevel=settings.log_level,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    # Faust's terminal spinner writes escape codes into the log even when it is no terminal.
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
