"""`python -m devstack.stripe_simulator`: run the simulator as a server.

Every option falls back to an environment variable, then to a default.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from aiohttp import web

from .app import create_app
from .config import SimulatorConfig
from .rate_limits import RateLimitSettings

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _option(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: str | None,
    help_: str,
    type_: type = str,
) -> None:
    value = os.environ.get(env, default)
    parser.add_argument(
        flag,
        type=type_,
        default=None if value is None else type_(value),
        help=f"{help_} (env {env}; default: %(default)s)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.stripe_simulator",
        description="Stripe API, hosted Checkout and webhook simulator for tests and dev.",
    )
    webhook_secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_simulator")
    _option(parser, "--host", "STRIPE_SIM_HOST", "127.0.0.1", "bind address")
    _option(parser, "--port", "STRIPE_SIM_PORT", "12111", "port", int)
    _option(
        parser,
        "--public-base-url",
        "STRIPE_SIM_PUBLIC_BASE_URL",
        None,
        "origin put into Checkout URLs; unset: the Host of each request",
    )
    _option(parser, "--api-key", "STRIPE_SIM_API_KEY", None, "the only API key accepted")
    _option(parser, "--webhook-url", "STRIPE_SIM_WEBHOOK_URL", None, "where events are POSTed")
    _option(
        parser,
        "--webhook-secret",
        "STRIPE_SIM_WEBHOOK_SECRET",
        webhook_secret,
        "signing secret(s), comma separated; falls back to STRIPE_WEBHOOK_SECRET",
    )
    _option(parser, "--latency-ms", "STRIPE_SIM_LATENCY_MS", "0", "delay per /v1 request", int)
    _option(
        parser,
        "--webhook-max-attempts",
        "STRIPE_SIM_WEBHOOK_MAX_ATTEMPTS",
        "8",
        "delivery attempts per event",
        int,
    )
    _option(
        parser,
        "--webhook-backoff-s",
        "STRIPE_SIM_WEBHOOK_BACKOFF_S",
        "0.2",
        "first retry delay in seconds, doubled on each retry",
        float,
    )
    _option(
        parser,
        "--rate-limit",
        "STRIPE_SIM_RATE_LIMIT",
        None,
        "requests per second for the whole account, answered 429 beyond it; unset: no limit",
        float,
    )
    _option(
        parser,
        "--endpoint-rate-limit",
        "STRIPE_SIM_ENDPOINT_RATE_LIMIT",
        None,
        "requests per second for each endpoint; unset: no limit",
        float,
    )
    _option(
        parser,
        "--rate-limit-burst-s",
        "STRIPE_SIM_RATE_LIMIT_BURST_S",
        "0.1",
        "seconds of unused rate a limit may save up for a burst",
        float,
    )
    _option(
        parser,
        "--state-file",
        "STRIPE_SIM_STATE_FILE",
        None,
        "keep sessions, payment intents, events and idempotency keys in this JSON file",
    )
    _option(parser, "--log-level", "STRIPE_SIM_LOG_LEVEL", "INFO", "logging level")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=_LOG_FORMAT)
    config = SimulatorConfig(
        public_base_url=args.public_base_url,
        api_key=args.api_key,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        latency_ms=args.latency_ms,
        webhook_max_attempts=args.webhook_max_attempts,
        webhook_initial_backoff_s=args.webhook_backoff_s,
        rate_limits=RateLimitSettings(
            global_per_s=args.rate_limit,
            endpoint_per_s=args.endpoint_rate_limit,
            burst_s=args.rate_limit_burst_s,
        ),
        state_file=args.state_file,
    )
    web.run_app(create_app(config), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
