"""What the notifier does with a client that cannot keep up (a stand-in socket and
subscriber; history from the real Redis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from aiohttp import WSCloseCode, WSMessage, WSMsgType, web

from services.notifier.connection import Connection, SocketPolicy
from services.notifier.hub import Hub
from shared import messages
from shared.bus import NotificationBus, StoredMessage
from tests.integration.test_notifier import until


class StuckSocket:
    """A client whose connection stopped draining: the first send never completes."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._closed = asyncio.Event()

    async def send_str(self, data: str) -> None:
        self.sent.append(json.loads(data))
        await asyncio.Event().wait()

    async def receive(self, timeout: float | None = None) -> WSMessage:  # noqa: ASYNC109 (aiohttp's)
        await self._closed.wait()
        return WSMessage(WSMsgType.CLOSED, None, None)

    async def close(self, *, code: int, message: bytes = b"") -> bool:
        self.close_code = code
        self._closed.set()
        return True


class FakeSubscriptions:
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.connected.set()
        self._users: set[str] = set()

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    async def subscribe(self, user_id: str) -> None:
        self._users.add(user_id)

    async def unsubscribe(self, user_id: str) -> None:
        self._users.discard(user_id)


def _link(i: int) -> StoredMessage:
    return StoredMessage(f"{10**12 + i}-0", messages.payment_url(f"r{i}", f"https://pay/{i}"))


async def test_a_client_that_cannot_keep_up_is_closed_with_1013(
    bus: NotificationBus, unique: str
) -> None:
    socket = StuckSocket()
    hub = Hub(FakeSubscriptions())
    user = f"user-{unique}"
    connection = Connection(
        cast(web.WebSocketResponse, socket), bus, hub, None, SocketPolicy(send_queue_size=3)
    )
    serving = asyncio.create_task(connection.serve({"userId": user}))
    await until(lambda: socket.sent and not connection.replaying, "registration")
    assert socket.sent == [messages.registration_success(user)]
    for i in range(4):  # the writer is stuck, so three fit in the queue and the fourth does not
        await hub.deliver(user, _link(i))
    await asyncio.wait_for(serving, 10)
    assert socket.close_code == WSCloseCode.TRY_AGAIN_LATER
    assert user not in hub.users
