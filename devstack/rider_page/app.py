"""Serves the rider page and tells it where the notifier listens."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
NOTIFIER_URL = web.AppKey("notifier_url", str)


def create_app(notifier_url: str) -> web.Application:
    app = web.Application()
    app[NOTIFIER_URL] = notifier_url
    app.add_routes(
        [
            web.get("/", index),
            web.get("/config.json", config),
            web.static("/static", STATIC),
        ]
    )
    return app


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def config(request: web.Request) -> web.Response:
    return web.json_response({"notifierUrl": request.app[NOTIFIER_URL]})
