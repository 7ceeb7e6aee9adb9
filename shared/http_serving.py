"""How long, and how many, connections our HTTP servers hold: nobody holds one for free.

aiohttp's defaults suit no public port: a connection that never finishes its request head, or
sits idle, is kept for an hour, and nothing bounds how many are open. So every server of ours:

- closes a connection that has no request in progress (idle, or its head still unfinished) after
  IDLE_TIMEOUT_S, which also ends slow-header (slowloris) connections; a proxy in front must
  keep idle upstream connections for less than that (docs/deploy.md);
- refuses connections beyond a number per process with a 503 and closes them, counted in
  `payments_http_connections_refused_total{server}`;
- and the webhook reads a body within its own bound (services/webhook/app.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter

IDLE_TIMEOUT_S = 15.0

REFUSED = Counter(
    "payments_http_connections_refused_total",
    "Connections closed at once: the server held its most already",
    ["server"],
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 22\r\n\r\ntoo many connections\r\n"
)


def limit_connections(server: web.Server, most: int, *, name: str) -> None:
    """Beyond `most` open connections, a new one is answered 503 and closed before it is read."""
    admit = server.connection_made

    def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
        admit(handler, transport)
        if len(server.connections) > most:
            REFUSED.labels(name).inc()
            # Once the handler has started, which it does next: it expects to be connected.
            asyncio.get_running_loop().call_soon(_refuse, transport)

    server.connection_made = connection_made  # type: ignore[method-assign]


def _refuse(transport: asyncio.Transport) -> None:
    transport.write(_BUSY)
    transport.close()


async def start_site(
    runner: web.AppRunner, port: int, *, most_connections: int, name: str, host: str | None = None
) -> None:
    """Set up `runner` (made with `keepalive_timeout=IDLE_TIMEOUT_S`) and listen on `port`."""
    await runner.setup()
    assert runner.server is not None
    limit_connections(runner.server, most_connections, name=name)
    await web.TCPSite(runner, host, port).start()
