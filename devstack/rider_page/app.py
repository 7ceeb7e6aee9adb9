"""Serves the rider page, tells it where the notifier listens, and asks the payments API for a
new link on its behalf (the API sits on the webhook's internal port, which a browser never
reaches in production; here the page's own server stands in for the ride service)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

STATIC = Path(__file__).parent / "static"
NOTIFIER_URL = web.AppKey("notifier_url", str)
PAYMENTS_API = web.AppKey("payments_api", str)
PAYMENTS_TOKEN = web.AppKey("payments_token", str)


def create_app(
    notifier_url: str,
    payments_api: str = "http://127.0.0.1:9092/payment-service",
    payments_token: str = "",
) -> web.Application:
    app = web.Application()
    app[NOTIFIER_URL] = notifier_url
    app[PAYMENTS_API] = payments_api.rstrip("/")
    app[PAYMENTS_TOKEN] = payments_token
    app.add_routes(
        [
            web.get("/", index),
            web.get("/config.json", config),
            web.post("/rides/{rideId}/checkout", new_link),
            web.static("/static", STATIC),
        ]
    )
    return app


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def config(request: web.Request) -> web.Response:
    return web.json_response({"notifierUrl": request.app[NOTIFIER_URL]})


async def new_link(request: web.Request) -> web.Response:
    """Relays `POST .../payments/{rideId}/checkout`; the link itself arrives over the socket."""
    ride_id = request.match_info["rideId"]
    token = request.app[PAYMENTS_TOKEN]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{request.app[PAYMENTS_API]}/payments/{ride_id}/checkout"
    try:
        async with aiohttp.ClientSession() as http, http.post(url, headers=headers) as answer:
            return web.json_response(await answer.json(content_type=None), status=answer.status)
    except aiohttp.ClientError as error:
        return web.json_response({"error": f"payments API unreachable: {error}"}, status=502)
