"""The notifier against hostile clients (issue 13): sockets that never register, too many
sockets, expired tokens, out-of-range ids and deeply nested frames. Real Redis throughout."""

from __future__ import annotations

import base64

import aiohttp
import pytest
from pydantic import SecretStr

from shared import messages
from tests.conftest import RunningPart
from tests.helpers import next_message
from tests.integration.test_notifier import (
    StartNotifier,
    expect_close,
    notifier_settings,
    send,
)
from tests.integration.test_notifier import notifiers as notifiers
from tests.integration.test_notifier import session as session

SECRET = "notifier-hostile-test-secret-of-some-length"


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
