"""The part of Stripe's /v1 API the payment system uses, mounted as a sub-application."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .checkout import Action, SessionNotOpenError
from .errors import StripeApiError, invalid_param, json_response, no_such
from .events import API_VERSION, RequestInfo
from .forms import FormError, decode_form
from .idempotency import IdempotencyCache, SavedResponse
from .simulator import SIMULATOR, Simulator
from .state import JSONObject, SimulatorState, new_id

PARAMS = web.RequestKey("stripe_params", dict[str, Any])
REQUEST_ID = web.RequestKey("stripe_request_id", str)

_EXPANDABLE = frozenset({"payment_intent"})


def create_v1_app() -> web.Application:
    app = web.Application(middlewares=[stripe_api])
    app.router.add_post("/checkout/sessions", create_checkout_session)
    app.router.add_get("/checkout/sessions", list_checkout_sessions)
    app.router.add_get("/checkout/sessions/{id}", retrieve_checkout_session)
    app.router.add_post("/checkout/sessions/{id}/expire", expire_checkout_session)
    app.router.add_post("/payment_intents", create_payment_intent)
    app.router.add_get("/payment_intents/{id}", retrieve_payment_intent)
    app.router.add_get("/charges/{id}", retrieve_charge)
    app.router.add_post("/refunds", create_refund)
    app.router.add_get("/refunds/{id}", retrieve_refund)
    app.router.add_get("/disputes/{id}", retrieve_dispute)
    app.router.add_route("*", "/{tail:.*}", unrecognized_url)
    return app


@web.middleware
async def stripe_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication, injected faults, parameter decoding and idempotency for every call."""
    simulator = request.config_dict[SIMULATOR]
    request_id = request[REQUEST_ID] = new_id("req_", 14)
    try:
        api_key = _authenticate(request, simulator)
        simulator.state.rate_limiter.admit(_endpoint(request))
        await _inject_faults(simulator.state)
        request[PARAMS] = await _read_params(request)
        await _slow_ride(simulator.state, request[PARAMS])
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key:
            response = await _idempotent(request, handler, simulator.state, f"{api_key}:{key}")
        else:
            response, _ = await _run(request, handler)
    except StripeApiError as exc:
        response = exc.response()
    response.headers.setdefault("Request-Id", request_id)
    # The one version whose shapes the simulator answers in, whatever the request asked for.
    response.headers.setdefault("Stripe-Version", API_VERSION)
    return response


async def create_checkout_session(request: web.Request) -> web.Response:
    simulator = request.config_dict[SIMULATOR]
    base_url = simulator.config.public_base_url or str(request.url.origin())
    session = simulator.create_session(request[PARAMS], base_url)
    return json_response(session.obj)


async def list_checkout_sessions(request: web.Request) -> web.Response:
    params = request[PARAMS]
    sessions = [s.obj for s in reversed(request.config_dict[SIMULATOR].state.sessions.values())]
    for name in ("status", "payment_intent"):
        if name in params:
            sessions = [s for s in sessions if s[name] == params[name]]
    sessions = _page(sessions, params)
    limit = _limit(params.get("limit"))
    # Going backwards, the page is the oldest `limit` objects newer than the cursor.
    page = sessions[-limit:] if "ending_before" in params else sessions[:limit]
    return json_response(
        {
            "object": "list",
            "data": page,
            "has_more": len(sessions) > limit,
            "url": "/v1/checkout/sessions",
        }
    )


async def retrieve_checkout_session(request: web.Request) -> web.Response:
    simulator = request.config_dict[SIMULATOR]
    session = simulator.session(request.match_info["id"])
    return json_response(_expand(simulator, session.obj, request[PARAMS].get("expand")))


async def expire_checkout_session(request: web.Request) -> web.Response:
    simulator = request.config_dict[SIMULATOR]
    cause = RequestInfo(request[REQUEST_ID], request.headers.get("Idempotency-Key"))
    try:
        session, _ = simulator.perform(request.match_info["id"], Action.EXPIRE, request=cause)
    except SessionNotOpenError as exc:
        raise StripeApiError(400, str(exc), code="checkout_session_not_open") from None
    return json_response(session.obj)


async def create_payment_intent(request: web.Request) -> web.Response:
    simulator = request.config_dict[SIMULATOR]
    cause = RequestInfo(request[REQUEST_ID], request.headers.get("Idempotency-Key"))
    return json_response(simulator.create_payment_intent(request[PARAMS], cause))


async def retrieve_payment_intent(request: web.Request) -> web.Response:
    intent_id = request.match_info["id"]
    intent = request.config_dict[SIMULATOR].state.payment_intents.get(intent_id)
    if intent is None:
        raise no_such("payment_intent", intent_id, "intent")
    return json_response(intent)


async def create_refund(request: web.Request) -> web.Response:
    simulator = request.config_dict[SIMULATOR]
    cause = RequestInfo(request[REQUEST_ID], request.headers.get("Idempotency-Key"))
    return json_response(simulator.create_refund(request[PARAMS], cause))


async def retrieve_refund(request: web.Request) -> web.Response:
    return json_response(request.config_dict[SIMULATOR].refund(request.match_info["id"]))


async def retrieve_charge(request: web.Request) -> web.Response:
    return json_response(request.config_dict[SIMULATOR].charge(request.match_info["id"]))


async def retrieve_dispute(request: web.Request) -> web.Response:
    return json_response(request.config_dict[SIMULATOR].dispute(request.match_info["id"]))


async def unrecognized_url(request: web.Request) -> web.Response:
    raise StripeApiError(
        404,
        f"Unrecognized request URL ({request.method}: {request.path}). "
        "The simulator implements only some Checkout Session, PaymentIntent, Charge, Refund "
        "and Dispute calls.",
    )


async def _run(request: web.Request, handler: Handler) -> tuple[web.StreamResponse, bool]:
    """The handler's response and whether an idempotency key may remember it."""
    try:
        return await handler(request), True
    except StripeApiError as exc:
        return exc.response(), exc.replayable


async def _idempotent(
    request: web.Request, handler: Handler, state: SimulatorState, key: str
) -> web.StreamResponse:
    cache: IdempotencyCache = state.idempotency
    raw_key = request.headers["Idempotency-Key"]
    if len(raw_key) > 255:
        raise invalid_param("Idempotency-Key", "Idempotency-Key must be at most 255 characters.")
    fingerprint = json.dumps([request.method, request.path, request[PARAMS]], sort_keys=True)
    # Stripe answers a concurrent duplicate with 409; waiting for the first one is kinder and
    # still yields exactly one object.
    async with cache.hold(key):
        saved = cache.get(key)
        if saved is not None:
            response: web.StreamResponse = _replay(saved, fingerprint, raw_key)
        else:
            response, replayable = await _run(request, handler)
            body = response.body if isinstance(response, web.Response) else None
            if replayable and isinstance(body, bytes):
                cache.save(key, fingerprint, response.status, body, request[REQUEST_ID])
    response.headers["Idempotency-Key"] = raw_key
    return response


def _replay(saved: SavedResponse, fingerprint: str, raw_key: str) -> web.Response:
    if saved.fingerprint != fingerprint:
        raise StripeApiError(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{raw_key}' if you meant to execute "
            "a different request.",
            type_="idempotency_error",
            replayable=False,
        )
    response = web.Response(body=saved.body, status=saved.status, content_type="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    response.headers["Original-Request"] = saved.request_id
    return response


def _authenticate(request: web.Request, simulator: Simulator) -> str:
    key = _api_key(request.headers.get("Authorization", ""))
    if not key:
        raise StripeApiError(
            401,
            "You did not provide an API key. Provide it in the Authorization header, "
            "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            replayable=False,
        )
    expected = simulator.config.api_key
    valid = key == expected if expected else key.startswith(("sk_", "rk_"))
    if not valid:
        raise StripeApiError(
            401,
            f"Invalid API Key provided: {_redact(key)}",
            code="api_key_invalid",
            replayable=False,
        )
    return key


def _endpoint(request: web.Request) -> str:
    """The route a request matched, such as `POST /checkout/sessions/{id}/expire`."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return f"{request.method} {path}"


def _redact(key: str) -> str:
    if len(key) <= 12:
        return key[:3] + "*" * (len(key) - 3)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def _api_key(authorization: str) -> str:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":  # curl -u sk_test_...:
        try:
            return base64.b64decode(credentials).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


async def _inject_faults(state: SimulatorState) -> None:
    latency_ms = state.latency_ms()
    if latency_ms:
        await asyncio.sleep(latency_ms / 1000)
    status = state.faults.take()
    if status is None:
        return
    headers = {}
    if state.faults.should_retry is not None:
        headers["Stripe-Should-Retry"] = str(state.faults.should_retry).lower()
    if status == 429:
        raise StripeApiError(
            429,
            "Request rate limit exceeded (injected by the simulator).",
            type_="rate_limit",
            code="rate_limit",
            replayable=False,
            headers=headers,
        )
    if status < 500:
        raise StripeApiError(
            status,
            "The request was refused (injected by the simulator).",
            type_="invalid_request_error",
            code="injected_refusal",
            replayable=False,
            headers=headers,
        )
    raise StripeApiError(
        status,
        "An unknown error occurred (injected by the simulator).",
        type_="api_error",
        replayable=False,
        headers=headers,
    )


async def _slow_ride(state: SimulatorState, params: dict[str, Any]) -> None:
    delay_ms = state.faults.slow_rides.get(str(params.get("client_reference_id")), 0)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)


async def _read_params(request: web.Request) -> dict[str, Any]:
    text = request.query_string if request.method in ("GET", "DELETE") else await request.text()
    try:
        return decode_form(text)
    except FormError as exc:
        raise invalid_param(exc.param, str(exc)) from None


def _limit(raw: Any) -> int:
    if raw is None:
        return 10
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise invalid_param("limit", f"Invalid integer: {raw}") from None
    if not 1 <= limit <= 100:
        raise invalid_param("limit", "limit must be between 1 and 100.")
    return limit


def _page(objects: list[JSONObject], params: dict[str, Any]) -> list[JSONObject]:
    """Apply `starting_after` / `ending_before` cursors to a newest-first list."""
    ids = [o["id"] for o in objects]
    for name in ("starting_after", "ending_before"):
        cursor = params.get(name)
        if cursor is None:
            continue
        if cursor not in ids:
            raise no_such("checkout.session", str(cursor), name)
        index = ids.index(cursor)
        return objects[index + 1 :] if name == "starting_after" else objects[:index]
    return objects


def _expand(simulator: Simulator, obj: JSONObject, expand: Any) -> JSONObject:
    fields = expand if isinstance(expand, list) else [] if expand is None else [expand]
    result = dict(obj)
    for field in fields:
        if field not in _EXPANDABLE:
            raise invalid_param("expand", f"This property cannot be expanded ({field}).")
        intent_id = result.get(field)
        if intent_id is not None:
            result[field] = simulator.state.payment_intents[intent_id]
    return result
