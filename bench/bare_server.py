"""A bare aiohttp server whose one handler only reads the body and answers a small JSON: the
floor the webhook is compared with under the same load. Listens on 127.0.0.1:$PORT.

    PORT=9099 .venv/bin/python -m bench.bare_server
"""

from __future__ import annotations

import os

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/payment-service/webhook", receive)
    return app


def main() -> None:
    port = int(os.environ.get("PORT", "9099"))
    web.run_app(create_app(), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
