"""`python -m devstack.rider_page --port 8080 --notifier ws://127.0.0.1:9091/payment-ws`."""

from __future__ import annotations

import argparse
import os

from aiohttp import web

from devstack.rider_page.app import create_app

parser = argparse.ArgumentParser(prog="python -m devstack.rider_page", description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8080)
parser.add_argument(
    "--notifier",
    default="ws://127.0.0.1:9091/payment-ws",
    help="the notifier's WebSocket URL (default: %(default)s)",
)
parser.add_argument(
    "--payments-api",
    default="http://127.0.0.1:9092/payment-service",
    help="the payments API, for new links (default: %(default)s)",
)
args = parser.parse_args()
app = create_app(args.notifier, args.payments_api, os.environ.get("INTERNAL_API_TOKEN", ""))
web.run_app(app, host=args.host, port=args.port, print=None)
