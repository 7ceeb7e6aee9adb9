"""The notifier against hostile clients (issue 13): sockets that never register, too many
sockets, expired tokens, out-of-range ids and deeply nested frames. Real Redis throughout."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from pydantic import SecretStr
from redis.exceptions import ResponseError

from services.notifier.connection import SocketPolicy
from shared import messages
from shared.bus import NotificationBus, connect_redis, is_message_id
from shared.settings import ConfigError, load_settings
from tests.conftest import RunningPart
from tests.helpers import eventually, http_status, next_message
from tests.integration.test_notifier import (
    Socket,
    StartNotifier,
    expect_close,
    notifier_settings,
    registered,
    send,
    start_notifier,
    until,
)
from tests.integration.test_notifier import notifiers as notifiers
from tests.integration.test_notifier import session as session
from tests.integration.test_notifier_resilience import own_redis as own_redis

SECRET = "notifier-hostile-test-secret-of-some-length"
BEYOND_64_BITS = "99999999999999999999-0"


def _refused(reason: str) -> float:
    sample = REGISTRY.get_sample_value(
        "payments_notifier_sockets_refused_total", {"reason": reason}
    )
    return sample or 0.0


@contextlib.asynccontextmanager
async def pinging(socket: Socket, every_s: float) -> AsyncIterator[None]:
    """Ping the server as a browser answers its heartbeats: a frame every `every_s`."""

    async def ping_forever() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not socket.closed:
                await socket.ping()
                await asyncio.sleep(every_s)

    pings = asyncio.create_task(ping_forever())
    try:
        yield
    finally:
        pings.cancel()
        await asyncio.gather(pings, return_exceptions=True)


# --- the registration deadline -----------------------------------------------------------


async def test_a_socket_that_answers_pings_but_never_registers_is_closed_at_the_deadline(
    notifiers: StartNotifier, session: aiohttp.ClientSession
) -> None:
    running = await notifiers(policy=SocketPolicy(registration_timeout_s=1.0))
    timeouts = _refused("registration_timeout")
    socket = await session.ws_connect(running.socket_url())
    opened = time.monotonic()
    # The client's own read timeout restarts on every pong too, hence the outer one.
    async with pinging(socket, every_s=0.1), asyncio.timeout(15):
        reply = await next_message(socket)
        assert reply["type"] == "error" and "registration" in reply["message"]
        await expect_close(socket, aiohttp.WSCloseCode.POLICY_VIOLATION)
    assert time.monotonic() - opened >= 0.8, "closed before the deadline"
    assert _refused("registration_timeout") == timeouts + 1


async def test_a_registered_socket_outlives_the_registration_deadline(
    notifiers: StartNotifier, session: aiohttp.ClientSession, bus: NotificationBus, unique: str
) -> None:
    running = await notifiers(policy=SocketPolicy(registration_timeout_s=0.5))
    user = f"user-{unique}"
    socket = await registered(session, running, user)
    deadline_passed = time.monotonic() + 0.6
    await until(lambda: time.monotonic() > deadline_passed, "the deadline to pass")
    link = messages.payment_url("r1", "https://pay/1")
    message_id = await bus.publish(user, link, version=1)
    assert await next_message(socket) == {**link, "id": message_id}
    await socket.close()


def test_the_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SocketPolicy.from_settings(load_settings()) == SocketPolicy()
    monkeypatch.setenv("NOTIFIER_REGISTER_TIMEOUT_S", "5")
    monkeypatch.setenv("NOTIFIER_MAX_SOCKETS_PER_USER", "2")
    monkeypatch.setenv("NOTIFIER_MAX_SOCKETS", "100")
    policy = SocketPolicy.from_settings(load_settings())
    assert (policy.registration_timeout_s, policy.max_sockets_per_user) == (5, 2)
    assert policy.max_sockets == 100
    monkeypatch.setenv("NOTIFIER_MAX_SOCKETS", "0")
    with pytest.raises(ConfigError, match="NOTIFIER_MAX_SOCKETS"):
        load_settings()


# --- limits ------------------------------------------------------------------------------


async def test_sockets_beyond_the_per_user_limit_are_refused_with_1008(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    redis_server: RunningPart,
    unique: str,
) -> None:
    running = await notifiers(notifier_settings(redis_server.url, notifier_max_sockets_per_user=3))
    user = f"user-{unique}"
    refusals = _refused("user_limit")
    held = [await registered(session, running, user) for _ in range(3)]

    by_url = await session.ws_connect(running.socket_url(userId=user))
    reply = await next_message(by_url)
    assert reply["type"] == "error" and "too many sockets" in reply["message"], reply
    await expect_close(by_url, aiohttp.WSCloseCode.POLICY_VIOLATION)
    by_message = await session.ws_connect(running.socket_url())
    await send(by_message, {"type": "register", "userId": user})
    assert "too many sockets" in (await next_message(by_message))["message"]
    await expect_close(by_message, aiohttp.WSCloseCode.POLICY_VIOLATION)
    assert _refused("user_limit") == refusals + 2
    assert len(running.notifier.hub.sockets_of(user)) == 3

    other = await registered(session, running, f"other-{unique}")
    await held.pop().close()
    await until(lambda: len(running.notifier.hub.sockets_of(user)) == 2, "a socket to leave")
    held.append(await registered(session, running, user))
    for socket in (*held, other):
        await socket.close()


async def test_sockets_beyond_the_process_limit_are_refused_with_1013(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    redis_server: RunningPart,
    unique: str,
) -> None:
    running = await notifiers(notifier_settings(redis_server.url, notifier_max_sockets=3))
    refusals = _refused("process_limit")
    held = [await registered(session, running, f"user-{unique}-{i}") for i in range(2)]
    held.append(await session.ws_connect(running.socket_url()))  # unregistered sockets count
    await until(lambda: len(running.notifier.sockets) == 3, "three sockets")

    refused = await session.ws_connect(running.socket_url(userId=f"user-{unique}-x"))
    reply = await next_message(refused)
    assert reply["type"] == "error" and "try again later" in reply["message"], reply
    await expect_close(refused, aiohttp.WSCloseCode.TRY_AGAIN_LATER)
    assert _refused("process_limit") == refusals + 1
    assert len(running.notifier.sockets) == 3

    await held.pop().close()
    await until(lambda: len(running.notifier.sockets) == 2, "a socket to leave")
    held.append(await registered(session, running, f"user-{unique}-y"))
    for socket in held:
        await socket.close()


# --- token expiry ------------------------------------------------------------------------


async def test_a_socket_is_closed_when_its_token_expires(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    redis_server: RunningPart,
    bus: NotificationBus,
    unique: str,
) -> None:
    running = await notifiers(
        notifier_settings(redis_server.url, notifier_jwt_secret=SecretStr(SECRET))
    )
    user = f"user-{unique}"
    expired = _refused("token_expired")
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 5}, SECRET, algorithm="HS256")
    socket = await registered(session, running, user, token=token)
    lasting = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    other = await registered(session, running, user, token=lasting)

    link = messages.payment_url("r1", "https://pay/1")
    message_id = await bus.publish(user, link, version=1)
    assert await next_message(socket) == {**link, "id": message_id}, "valid until it expires"
    reply = await next_message(socket, timeout_s=15)
    assert reply == messages.error("token expired; reconnect with a new token")
    await expect_close(socket, aiohttp.WSCloseCode.POLICY_VIOLATION)
    assert _refused("token_expired") == expired + 1

    assert await next_message(other) == {**link, "id": message_id}
    assert running.notifier.hub.sockets_of(user) and not other.closed
    await other.close()


async def test_a_socket_registered_without_auth_closes_at_the_longest_token_lifetime(
    notifiers: StartNotifier, session: aiohttp.ClientSession, unique: str
) -> None:
    """Locally (no keys) a socket lives no longer than a token could: it is told, then closed
    with 1001 so that clients reconnect (with lastId) at once."""
    running = await notifiers(policy=SocketPolicy(max_lifetime_s=1.0))
    ended = _refused("lifetime")
    opened = time.monotonic()
    socket = await registered(session, running, f"user-{unique}")
    reply = await next_message(socket, timeout_s=15)
    assert reply == messages.error("this socket reached its longest lifetime; reconnect")
    await expect_close(socket, aiohttp.WSCloseCode.GOING_AWAY)
    assert time.monotonic() - opened >= 1.0, "closed before its lifetime"
    assert _refused("lifetime") == ended + 1


def test_the_longest_lifetime_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFIER_MAX_TOKEN_LIFETIME_S", "900")
    assert SocketPolicy.from_settings(load_settings()).max_lifetime_s == 900


# --- message ids -------------------------------------------------------------------------

LARGEST = 2**64 - 1
VALID_IDS = ["0-0", "1718000000000-0", f"{LARGEST}-0", f"0-{LARGEST}", f"{LARGEST}-{LARGEST - 1}"]
# Redis refuses to read after these, so the notifier must refuse them from clients.
OUT_OF_RANGE_IDS = [BEYOND_64_BITS, f"0-{LARGEST + 1}", f"{LARGEST}-{LARGEST}"]
MALFORMED_IDS: list[object] = ["1718000000000", "-1-0", "1-0 ", "\u0661-0", "", 17, None]


async def _redis_reads_after(url: str, message_id: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        await client.xrange("payments:{nobody}:history", min=f"({message_id}", max="+")
    except ResponseError:
        return False
    finally:
        await client.aclose()
    return True


@pytest.mark.parametrize("message_id", VALID_IDS)
async def test_valid_message_ids_are_read_after_by_redis(
    redis_server: RunningPart, message_id: str
) -> None:
    assert is_message_id(message_id)
    assert await _redis_reads_after(redis_server.url, message_id)


@pytest.mark.parametrize("message_id", OUT_OF_RANGE_IDS)
async def test_ids_redis_refuses_are_not_message_ids(
    redis_server: RunningPart, message_id: str
) -> None:
    assert not await _redis_reads_after(redis_server.url, message_id)
    assert not is_message_id(message_id)


@pytest.mark.parametrize("value", MALFORMED_IDS)
def test_malformed_ids_are_not_message_ids(value: object) -> None:
    assert not is_message_id(value)


async def test_an_out_of_range_last_id_is_refused_and_a_redis_restart_affects_no_one(
    own_redis: RunningPart, session: aiohttp.ClientSession, unique: str
) -> None:
    running = await start_notifier(notifier_settings(own_redis.url))
    rider = f"rider-{unique}"
    try:
        rider_socket = await registered(session, running, rider)
        by_url = await session.ws_connect(
            running.socket_url(userId=f"attacker-{unique}", lastId=BEYOND_64_BITS)
        )
        url_reply = await next_message(by_url)
        by_message = await session.ws_connect(running.socket_url())
        register = {"type": "register", "userId": f"attacker-{unique}", "lastId": BEYOND_64_BITS}
        await send(by_message, register)
        message_reply = await next_message(by_message)

        await asyncio.to_thread(own_redis.process.stop)
        await asyncio.to_thread(own_redis.process.start)

        async def ready() -> bool:
            return await http_status(running.url("/readyz")) == 200

        await eventually(ready, timeout_s=20, every_s=0.05, what="/readyz to turn 200 again")
        subscriber = running.notifier.subscriber
        await until(lambda: subscriber.reconnects >= 1, "the subscriber to reconnect")
        bus = NotificationBus(connect_redis(own_redis.url))
        link = messages.payment_url("r1", "https://pay/1")
        message_id = await bus.publish(rider, link, version=1)
        assert await next_message(rider_socket, timeout_s=10) == {**link, "id": message_id}
        await bus.close()
        assert await http_status(running.url("/readyz")) == 200
        reconnects = subscriber.reconnects

        for reply in (url_reply, message_reply):
            assert reply["type"] == "error" and "lastId" in reply["message"], reply
        # The socket stays open and can still register properly.
        await send(by_message, {**register, "lastId": "0-0"})
        assert (await next_message(by_message))["type"] == "registration_success"
        assert subscriber.reconnects == reconnects, "the subscriber kept reconnecting"
        for socket in (rider_socket, by_url, by_message):
            await socket.close()
    finally:
        await running.runner.cleanup()


async def test_a_socket_whose_replay_fails_is_closed_and_nobody_else_notices(
    own_redis: RunningPart, session: aiohttp.ClientSession, unique: str
) -> None:
    """One user's unreadable history breaks only that user's sockets, never the subscriber."""
    running = await start_notifier(notifier_settings(own_redis.url))
    admin = redis.Redis.from_url(own_redis.url)
    bus = NotificationBus(connect_redis(own_redis.url))
    rider, broken = f"rider-{unique}", f"broken-{unique}"
    try:
        rider_socket = await registered(session, running, rider)
        broken_socket = await registered(session, running, broken)
        await admin.xadd(f"payments:{{{broken}}}:history", {"m": "{not json"})
        subscriber = running.notifier.subscriber
        reconnects = subscriber.reconnects
        assert await admin.client_kill_filter(_type="pubsub") == 1

        reply = await next_message(broken_socket, timeout_s=15)
        assert reply["type"] == "error" and "reconnect" in reply["message"], reply
        await expect_close(broken_socket, aiohttp.WSCloseCode.INTERNAL_ERROR)

        await until(subscriber.connected.is_set, "the subscriber to reconnect")
        link = messages.payment_url("r1", "https://pay/1")
        message_id = await bus.publish(rider, link, version=1)
        assert await next_message(rider_socket, timeout_s=10) == {**link, "id": message_id}
        assert subscriber.reconnects == reconnects + 1, "the subscriber kept reconnecting"
        assert await http_status(running.url("/readyz")) == 200
        await rider_socket.close()
    finally:
        await admin.aclose()
        await bus.close()
        await running.runner.cleanup()


# --- frames ------------------------------------------------------------------------------

HOSTILE_FRAMES: list[tuple[str, str]] = [
    ("[" * 30_000 + "]" * 30_000, "nested too deeply"),
    ('{"a":' * 6_000 + "1" + "}" * 6_000, "nested too deeply"),
    ("[" * 30_000, "nested too deeply"),
    ('{"type": "register", "userId": "u", "lastId": ' + "9" * 5_000 + "}", "not valid JSON"),
    ('{"type": "register", "userId": "' + "[" * 30_000 + '"}', "userId"),
]


@pytest.mark.parametrize(("raw", "complaint"), HOSTILE_FRAMES)
async def test_a_hostile_frame_gets_an_error_and_the_socket_stays_usable(
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
    assert reply["type"] == "error" and complaint in reply["message"], reply
    await send(socket, {"type": "register", "userId": f"user-{unique}"})
    assert await next_message(socket) == messages.registration_success(f"user-{unique}")
    await socket.close()


async def test_a_token_with_a_deeply_nested_header_is_refused_with_1008(
    notifiers: StartNotifier,
    session: aiohttp.ClientSession,
    redis_server: RunningPart,
    unique: str,
) -> None:
    running = await notifiers(
        notifier_settings(redis_server.url, notifier_jwt_secret=SecretStr(SECRET))
    )
    header = base64.urlsafe_b64encode(("[" * 20_000).encode()).rstrip(b"=").decode()
    token = f"{header}.e30.c2ln"
    socket = await session.ws_connect(running.socket_url())
    await send(socket, {"type": "register", "userId": f"user-{unique}", "token": token})
    reply = await next_message(socket)
    assert reply == messages.error("authentication failed: the token is malformed")
    await expect_close(socket, aiohttp.WSCloseCode.POLICY_VIOLATION)
