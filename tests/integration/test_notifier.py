"""The notifier in-process against a real Redis: the WebSocket protocol, replay and fan-out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import web

from services.notifier.app import NOTIFIER, SOCKET_PATH, DrainPolicy, Notifier, create_app
from services.notifier.connection import SocketPolicy
from shared import messages
from shared.bus import NotificationBus, user_channel
from shared.settings import Settings
from tests.conftest import RunningPart
from tests.helpers import eventually, next_message, status_update

Socket = aiohttp.ClientWebSocketResponse


@dataclass
class RunningNotifier:
    runner: web.AppRunner
    port: int

    @property
    def notifier(self) -> Notifier:
        return self.runner.app[NOTIFIER]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def socket_url(self, **query: str) -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        return f"ws://127.0.0.1:{self.port}{SOCKET_PATH}{suffix}"

    async def settled(self, user_id: str) -> None:
        """Wait until every socket of the user here has finished its replay."""

        def done() -> bool:
            sockets = [c for c in self.notifier.sockets if c.user_id == user_id]
            return bool(sockets) and not any(c.replaying for c in sockets)

        await until(done, f"{user_id}'s sockets to finish replaying")


async def until(predicate: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    async def probe() -> bool:
        return bool(predicate())

    await eventually(probe, timeout_s=timeout_s, every_s=0.01, what=what)


StartNotifier = Callable[..., Awaitable[RunningNotifier]]


def notifier_settings(redis_url: str, **values: Any) -> Settings:
    base: dict[str, Any] = {"notifier_jwt_secret": None, "notifier_jwt_public_key": None}
    return Settings(redis_url=redis_url, **{**base, **values})


async def start_notifier(
    settings: Settings, *, policy: SocketPolicy | None = None, drain: DrainPolicy | None = None
) -> RunningNotifier:
    runner = web.AppRunner(create_app(settings, policy=policy, drain=drain), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    running = RunningNotifier(runner, runner.addresses[0][1])
    await until(running.notifier.subscriber.connected.is_set, "the subscriber to connect")
    return running


@pytest.fixture
async def notifiers(redis_server: RunningPart) -> AsyncIterator[StartNotifier]:
    """Starts notifier apps (on the session's Redis unless settings say otherwise)."""
    started: list[RunningNotifier] = []

    async def start(settings: Settings | None = None, **options: Any) -> RunningNotifier:
        running = await start_notifier(settings or notifier_settings(redis_server.url), **options)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def send(socket: Socket, message: object) -> None:
    await socket.send_str(json.dumps(message))


async def registered(
    session: aiohttp.ClientSession, running: RunningNotifier, user_id: str, **query: str
) -> Socket:
    """A socket registered through the URL whose replay is over."""
    socket = await session.ws_connect(running.socket_url(userId=user_id, **query))
    assert await next_message(socket, 10) == messages.registration_success(user_id)
    await running.settled(user_id)
    return socket


async def expect_close(socket: Socket, code: int) -> None:
    frame = await socket.receive(timeout=10)
    assert frame.type is aiohttp.WSMsgType.CLOSE, frame
    assert frame.data == code


def without_id(message: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(message.get("id"), str)
    return {key: value for key, value in message.items() if key != "id"}


# --- registration -------------------------------------------------------------------------


async def test_url_registration_gets_registration_success(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await notifiers()
    socket = await session.ws_connect(running.socket_url(userId=f"user-{unique}"))
    assert await next_message(socket) == {
        "type": "registration_success",
        "message": "Successfully registered for payment notifications",
        "userId": f"user-{unique}",
    }
    await send(socket, {"type": "register", "userId": f"user-{unique}"})
    assert await next_message(socket) == {
        "type": "info",
        "message": "User already registered via URL parameter",
    }
    await socket.close()


async def test_message_registration_then_a_second_register_gets_info(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await notifiers()
    socket = await session.ws_connect(running.socket_url())
    await send(socket, {"type": "register", "userId": f"user-{unique}"})
    assert await next_message(socket) == messages.registration_success(f"user-{unique}")
    await send(socket, {"type": "register", "userId": f"other-{unique}"})
    reply = await next_message(socket)
    assert reply["type"] == "info"
    assert [c.user_id for c in running.notifier.sockets] == [f"user-{unique}"]
    await socket.close()


BAD_MESSAGES: list[tuple[str, str]] = [
    ("not json", "not valid JSON"),
    ('["register"]', "JSON object"),
    ('"register"', "JSON object"),
    ("42", "JSON object"),
    ("{}", "no type"),
    ('{"type": "subscribe", "userId": "u"}', "unknown type"),
    ('{"type": "register"}', "userId"),
    ('{"type": "register", "userId": ""}', "userId"),
    ('{"type": "register", "userId": "   "}', "userId"),
    ('{"type": "register", "userId": 42}', "userId"),
    (json.dumps({"type": "register", "userId": "u" * 201}), "200"),
    ('{"type": "register", "userId": "u", "lastId": "yesterday"}', "lastId"),
    ('{"type": "register", "userId": "u", "lastId": 17}', "lastId"),
]


@pytest.mark.parametrize(("raw", "complaint"), BAD_MESSAGES)
async def test_anything_else_gets_an_error_and_the_socket_stays_open(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    unique: str,
    raw: str,
    complaint: str,
) -> None:
    running = await notifiers()
    socket = await session.ws_connect(running.socket_url())
    await socket.send_str(raw)
    reply = await next_message(socket)
    assert reply["type"] == "error"
    assert complaint in reply["message"]
    await send(socket, {"type": "register", "userId": f"user-{unique}"})
    assert await next_message(socket) == messages.registration_success(f"user-{unique}")
    await socket.close()


async def test_binary_frames_and_errors_after_registration_keep_the_socket(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await notifiers()
    socket = await session.ws_connect(running.socket_url())
    await socket.send_bytes(b'{"type": "register"}')
    assert (await next_message(socket))["type"] == "error"
    await send(socket, {"type": "register", "userId": f"user-{unique}"})
    assert (await next_message(socket))["type"] == "registration_success"
    await send(socket, {"type": "ping"})
    assert (await next_message(socket))["type"] == "error"
    await send(socket, {"type": "register", "userId": f"user-{unique}"})
    assert (await next_message(socket))["type"] == "info"
    await socket.close()


async def test_bad_url_user_id_or_last_id_gets_an_error_then_message_registration_works(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await notifiers()
    user = f"user-{unique}"
    for query in ({"userId": ""}, {"userId": user, "lastId": "abc"}):
        socket = await session.ws_connect(running.socket_url(**query))
        assert (await next_message(socket))["type"] == "error"
        # The message's fields win over the URL's (here, over the URL's bad lastId).
        await send(socket, {"type": "register", "userId": user, "lastId": "0-0"})
        assert (await next_message(socket))["type"] == "registration_success"
        await socket.close()


async def test_a_message_over_64_kib_closes_the_socket_with_1009(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await notifiers()
    socket = await session.ws_connect(running.socket_url())
    await send(socket, {"type": "register", "userId": f"user-{unique}", "pad": "x" * 65536})
    await expect_close(socket, aiohttp.WSCloseCode.MESSAGE_TOO_BIG)


async def test_a_socket_that_never_registers_is_closed(
    notifiers: StartNotifier, session: aiohttp.ClientSession
) -> None:
    running = await notifiers(policy=SocketPolicy(registration_timeout_s=0.3))
    socket = await session.ws_connect(running.socket_url())
    await send(socket, {"type": "hello"})
    assert (await next_message(socket))["type"] == "error", "an error does not reset the clock"
    reply = await next_message(socket)
    assert reply["type"] == "error" and "registration" in reply["message"]
    await expect_close(socket, aiohttp.WSCloseCode.POLICY_VIOLATION)


# --- delivery ----------------------------------------------------------------------------


async def test_every_socket_of_a_user_gets_every_message(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    bus: NotificationBus,
    unique: str,
) -> None:
    running = await notifiers()
    user = f"user-{unique}"
    phone = await registered(session, running, user)
    web_socket = await registered(session, running, user)
    sent = [
        messages.payment_url("r1", "https://pay/r1"),
        status_update("r1", "failed", "cs_1"),
        status_update("r1", "succeeded", "cs_1"),
    ]
    ids = [await bus.publish(user, message, version=v) for v, message in enumerate(sent, 1)]
    for socket in (phone, web_socket):
        received = [await next_message(socket) for _ in sent]
        assert [m["id"] for m in received] == ids
        assert [without_id(m) for m in received] == sent
        await socket.close()


async def test_two_instances_deliver_each_user_exactly_their_own_messages(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    bus: NotificationBus,
    unique: str,
) -> None:
    first, second = await notifiers(), await notifiers()
    alice, bob, carol = f"alice-{unique}", f"bob-{unique}", f"carol-{unique}"
    sockets = {
        alice: [await registered(session, first, alice)],
        bob: [await registered(session, second, bob)],
        carol: [await registered(session, first, carol), await registered(session, second, carol)],
    }
    assert alice in first.notifier.subscriber.users
    assert alice not in second.notifier.subscriber.users
    published: dict[str, list[str]] = {user: [] for user in sockets}
    for ride in range(4):
        for user in sockets:
            link = messages.payment_url(f"{user}-r{ride}", f"https://pay/{user}/{ride}")
            message_id = await bus.publish(user, link, version=1)
            assert message_id is not None
            published[user].append(message_id)
    for user, user_sockets in sockets.items():
        for socket in user_sockets:
            received = [await next_message(socket) for _ in range(4)]
            assert [m["id"] for m in received] == published[user]
            assert all(m["rideId"].startswith(f"{user}-") for m in received)
    # Nothing more is waiting: the next message each socket gets is a fresh one of its own.
    for user, user_sockets in sockets.items():
        last = await bus.publish(user, messages.payment_url(f"{user}-z", "https://p"), version=1)
        for socket in user_sockets:
            assert (await next_message(socket))["id"] == last
            await socket.close()


async def test_late_registration_gets_the_pending_payment_url_only(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    bus: NotificationBus,
    unique: str,
) -> None:
    running = await notifiers()
    user = f"user-{unique}"
    pending = messages.payment_url("open", "https://pay/open")
    await bus.publish(user, messages.payment_url("paid", "https://pay/paid"), version=1)
    await bus.publish(user, status_update("paid", "succeeded", "cs_p"), version=2)
    pending_id = await bus.publish(user, pending, version=1)
    socket = await session.ws_connect(running.socket_url(userId=user))
    assert (await next_message(socket))["type"] == "registration_success"
    succeeded = await next_message(socket)
    assert succeeded["type"] == "payment_status_update" and succeeded["rideId"] == "paid"
    link = await next_message(socket)
    assert link == {**pending, "id": pending_id}
    await socket.close()


async def test_last_id_resume_gets_exactly_what_was_missed(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    bus: NotificationBus,
    unique: str,
) -> None:
    running = await notifiers()
    user = f"user-{unique}"
    socket = await registered(session, running, user)
    first = [messages.payment_url(f"r{i}", f"https://pay/{i}") for i in range(3)]
    for message in first:
        await bus.publish(user, message, version=1)
    seen = [await next_message(socket) for _ in first]
    await socket.close()
    missed = [status_update(f"r{i}", "succeeded", f"cs_{i}") for i in range(3)]
    missed_ids = [await bus.publish(user, message, version=2) for message in missed]

    by_url = await session.ws_connect(running.socket_url(userId=user, lastId=seen[1]["id"]))
    assert (await next_message(by_url))["type"] == "registration_success"
    resumed = [await next_message(by_url) for _ in range(4)]
    assert [m["id"] for m in resumed] == [seen[2]["id"], *missed_ids]

    by_message = await session.ws_connect(running.socket_url())
    await send(by_message, {"type": "register", "userId": user, "lastId": seen[2]["id"]})
    assert (await next_message(by_message))["type"] == "registration_success"
    assert [(await next_message(by_message))["id"] for _ in missed] == missed_ids

    assert missed_ids[1] is not None
    url_then_message = await session.ws_connect(running.socket_url(lastId=missed_ids[1]))
    await send(url_then_message, {"type": "register", "userId": user})
    assert (await next_message(url_then_message))["type"] == "registration_success"
    assert (await next_message(url_then_message))["id"] == missed_ids[2]

    # All are live now, and none gets anything twice.
    later = await bus.publish(user, messages.payment_url("r9", "https://pay/9"), version=1)
    for resumed_socket in (by_url, by_message, url_then_message):
        assert (await next_message(resumed_socket))["id"] == later
        await resumed_socket.close()


async def test_a_status_published_with_an_older_version_is_not_delivered(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    bus: NotificationBus,
    unique: str,
) -> None:
    running = await notifiers()
    user = f"user-{unique}"
    socket = await registered(session, running, user)
    await bus.publish(user, status_update("r1", "succeeded", "cs_1"), version=3)
    stale = status_update("r1", "failed", "cs_1")
    assert await bus.publish(user, stale, version=2) is None
    marker = await bus.publish(user, messages.payment_url("r2", "https://pay/2"), version=1)
    assert (await next_message(socket))["status"] == "succeeded"
    assert (await next_message(socket))["id"] == marker, "the stale status came in between"
    await socket.close()


async def test_the_channel_is_unsubscribed_when_the_last_socket_leaves(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    redis_server: RunningPart,
    unique: str,
) -> None:
    running = await notifiers()
    subscriber = running.notifier.subscriber
    user = f"user-{unique}"
    client = redis.Redis.from_url(redis_server.url)

    async def listeners() -> int:
        counts = await client.pubsub_numsub(user_channel(user))
        return int(counts[0][1])

    first = await registered(session, running, user)
    second = await registered(session, running, user)
    assert user in subscriber.users and await listeners() == 1
    await first.close()
    await until(lambda: len(running.notifier.hub.sockets_of(user)) == 1, "one socket left")
    assert user in subscriber.users and await listeners() == 1
    await second.close()
    await until(lambda: user not in subscriber.users, "the unsubscribe")

    async def no_listeners() -> bool:
        return await listeners() == 0

    await eventually(no_listeners, timeout_s=10, what="PUBSUB NUMSUB to reach 0")
    assert user not in running.notifier.hub.users
    await client.aclose()


# --- health and shutdown -----------------------------------------------------------------


async def test_health_readiness_and_metrics(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await notifiers()
    socket = await registered(session, running, f"user-{unique}")
    async with session.get(running.url("/healthz")) as response:
        assert response.status == 200
    async with session.get(running.url(SOCKET_PATH)) as response:
        assert response.status == 400, "a plain GET is not a WebSocket upgrade"
    async with session.get(running.url("/readyz")) as response:
        assert response.status == 200, await response.text()
        assert set((await response.json())["checks"]) == {"redis", "redis-subscriber", "accepting"}
    async with session.get(running.url("/metrics")) as response:
        body = await response.text()
    assert response.status == 200
    for name in (
        "payments_notifier_connections",
        "payments_notifier_registered_users",
        "payments_notifier_subscribed_channels",
        "payments_notifier_messages_delivered_total",
    ):
        assert name in body
    await socket.close()
