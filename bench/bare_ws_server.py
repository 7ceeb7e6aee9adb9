"""A bare aiohttp WebSocket server: it accepts sockets on /payment-ws and holds them, answering
nothing (compression off, no heartbeat). The floor the notifier's memory per socket is compared
with in bench/notifier_sockets.py. Listens on 127.0.0.1:$PORT.

    PORT=9098 .venv/bin/python -m bench.bare_ws_server
"""

from __future__ import annotations

import os

from aiohttp import web

PATH = "/payment-ws"


async def hold(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(compress=False)
    await socket.prepare(request)
    async for _ in socket:  # read until the client closes; every frame is ignored
        pass
    return socket


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get(PATH, hold)
    return app


def main() -> None:
    port = int(os.environ.get("PORT", "9098"))
    web.run_app(create_app(), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
