"""The notification bus: per-user history and pub/sub in Redis.

Publishing is one Lua script, so that appending to the user's history, checking the ride's
version and PUBLISHing happen atomically: two processes publishing for the same ride at the
same instant cannot deliver an older status after a newer one. The history entry's stream id
becomes the message's `id`, which only grows for one user, so a client can resume after it.

The subscriber side keeps one pub/sub connection per process and re-subscribes after Redis
drops it (redis-py does not reconnect pub/sub connections by itself).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.batching import GroupCommit
from shared.messages import NOTE_TYPES, Message
from shared.model import LINK_NOT_OFFERED_STATUSES

logger = logging.getLogger(__name__)

HISTORY_LENGTH = 200
HISTORY_TTL_S = 24 * 3600
MESSAGE_ID_PATTERN = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_LARGEST_ID_PART = 2**64 - 1

# KEYS: user's history stream, ride's last published version, ride's link in the stream.
# ARGV: message JSON, version, kind ("url" may repeat a version, "status" may not, "note" is
#       outside the order), channel, history length, ttl.
# A ride's link replaces its link before in the history, so repeated links (a new-link call,
# a redelivered ride event) never push a status out of what a client resumes from.
_PUBLISH_SCRIPT = """
if ARGV[3] ~= 'note' then
  local last = tonumber(redis.call('GET', KEYS[2]) or '0')
  local version = tonumber(ARGV[2])
  if version < last or (version == last and ARGV[3] == 'status') then
    return false
  end
  redis.call('SET', KEYS[2], version, 'EX', ARGV[6])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], '*', 'm', ARGV[1])
if ARGV[3] == 'url' then
  local previous = redis.call('GET', KEYS[3])
  if previous then
    redis.call('XDEL', KEYS[1], previous)
  end
  redis.call('SET', KEYS[3], id, 'EX', ARGV[6])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[4], '{"id":"' .. id .. '","message":' .. ARGV[1] .. '}')
return id
"""


_CHANNEL_PREFIX, _CHANNEL_SUFFIX = "payments:{", "}:live"
_KEEPALIVE_CHANNEL = "payments:subscriber-keepalive"


def user_channel(user_id: str) -> str:
    return f"{_CHANNEL_PREFIX}{user_id}{_CHANNEL_SUFFIX}"


def _user_of(channel: str) -> str:
    if not (channel.startswith(_CHANNEL_PREFIX) and channel.endswith(_CHANNEL_SUFFIX)):
        raise ValueError(f"not a user channel: {channel}")
    return channel[len(_CHANNEL_PREFIX) : -len(_CHANNEL_SUFFIX)]


def _history_key(user_id: str) -> str:
    return f"payments:{{{user_id}}}:history"


def _ride_version_key(user_id: str, ride_id: str) -> str:
    return f"payments:{{{user_id}}}:ride:{ride_id}:version"


def _ride_link_key(user_id: str, ride_id: str) -> str:
    return f"payments:{{{user_id}}}:ride:{ride_id}:link"


def connect_redis(url: str, *, retry: bool = True) -> redis.Redis:
    """A client whose commands are sent again when Redis dropped the connection (a restart).

    `retry=False` for a connection whose drops must be seen, not bridged: the subscriber's,
    which replays to its sockets what they may have missed while it was away.
    """
    # The asyncio Retry: redis.retry.Retry, accepted too, never retries an asyncio command.
    return redis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3 if retry else 0),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    message: Message

    def for_client(self) -> Message:
        return {**self.message, "id": self.id}


@dataclass(frozen=True, slots=True)
class _Publication:
    keys: list[str]
    args: list[str | int]


class NotificationBus:
    """Publishes a user's notifications and reads their history.

    Publications made while others are on their way go to Redis together, in one pipeline.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._publish = client.register_script(_PUBLISH_SCRIPT)
        self._publications = GroupCommit(self._publish_batch)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def publish(self, user_id: str, message: Message, *, version: int) -> str | None:
        """Store and publish; returns the message id, or None when a newer state was published.

        A `payment_url` may be published again at the same version (a redelivered ride event
        re-sends the link); a status update never twice for one version. A note
        (messages.NOTE_TYPES) is published whatever the version, and moves it not.
        """
        ride_id = message["rideId"]
        kind = _kind(message)
        result = await self._publications.submit(
            _Publication(
                keys=[
                    _history_key(user_id),
                    _ride_version_key(user_id, ride_id),
                    _ride_link_key(user_id, ride_id),
                ],
                args=[
                    json.dumps(message, separators=(",", ":")),
                    version,
                    kind,
                    user_channel(user_id),
                    HISTORY_LENGTH,
                    HISTORY_TTL_S,
                ],
            )
        )
        return result.decode() if isinstance(result, bytes) else None

    async def _publish_batch(self, publications: Sequence[_Publication]) -> list[object]:
        if len(publications) == 1:
            return [await self._publish(keys=publications[0].keys, args=publications[0].args)]
        async with self._client.pipeline(transaction=False) as pipeline:
            for publication in publications:
                await self._publish(publication.keys, publication.args, client=pipeline)
            return cast(list[object], await pipeline.execute())

    async def history(self, user_id: str, after_id: str | None = None) -> list[StoredMessage]:
        """The user's stored messages, oldest first, after `after_id` when given."""
        start = f"({after_id}" if after_id else "-"
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await self._client.xrange(_history_key(user_id), min=start, max="+"),
        )
        return [
            StoredMessage(entry_id.decode(), json.loads(fields[b"m"]))
            for entry_id, fields in entries
        ]


def _kind(message: Message) -> str:
    if message["type"] == "payment_url":
        return "url"
    return "note" if message["type"] in NOTE_TYPES else "status"


def still_relevant(messages: list[StoredMessage]) -> list[StoredMessage]:
    """What a client that never saw any message should get, in order.

    Per ride: its latest status update, and its latest payment link while the ride may still
    be paid with it (a `failed` payment can be retried from the same link; not a final one, nor
    one `processing`, whose session completed) or when the link came after that status (a new
    attempt for an expired ride); and every note.
    """
    latest_status: dict[str, StoredMessage] = {}
    latest_url: dict[str, StoredMessage] = {}
    notes: list[StoredMessage] = []
    for stored in messages:
        ride_id = stored.message.get("rideId", "")
        if stored.message.get("type") == "payment_url":
            latest_url[ride_id] = stored
        elif stored.message.get("type") in NOTE_TYPES:
            notes.append(stored)
        else:
            latest_status[ride_id] = stored
    final = {status.value for status in LINK_NOT_OFFERED_STATUSES}
    chosen = [*latest_status.values(), *notes]
    chosen += [
        url
        for ride_id, url in latest_url.items()
        if ride_id not in latest_status
        or latest_status[ride_id].message.get("status") not in final
        or _id_order(url.id) > _id_order(latest_status[ride_id].id)
    ]
    return sorted(chosen, key=lambda stored: _id_order(stored.id))


def _id_order(message_id: str) -> tuple[int, int]:
    milliseconds, sequence = message_id.split("-")
    return int(milliseconds), int(sequence)


def is_message_id(value: object) -> bool:
    """True for an id Redis can read history after: two unsigned 64-bit integers.

    Clients send ids back (`lastId`), so they are checked against what Redis accepts: each part
    fits 64 bits, and the largest id is refused too, because nothing can come after it.
    """
    if not isinstance(value, str) or not MESSAGE_ID_PATTERN.fullmatch(value):
        return False
    parts = _id_order(value)
    return max(parts) <= _LARGEST_ID_PART and parts != (_LARGEST_ID_PART, _LARGEST_ID_PART)


def is_after(message_id: str, other_id: str | None) -> bool:
    return other_id is None or _id_order(message_id) > _id_order(other_id)


Deliver = Callable[[str, StoredMessage], Awaitable[None]]
OnResubscribed = Callable[[], Awaitable[None]]


class UserSubscriber:
    """One pub/sub connection for a process; channels follow the users it holds sockets for."""

    def __init__(
        self,
        client: redis.Redis,
        deliver: Deliver,
        on_resubscribed: OnResubscribed,
        *,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._client = client
        self._deliver = deliver
        self._on_resubscribed = on_resubscribed
        self._max_backoff_s = max_backoff_s
        self._users: set[str] = set()
        self._pubsub: Any = None
        self.connected = asyncio.Event()
        self.reconnects = 0

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    async def subscribe(self, user_id: str) -> None:
        self._users.add(user_id)
        await self._send("subscribe", user_id)

    async def unsubscribe(self, user_id: str) -> None:
        self._users.discard(user_id)
        await self._send("unsubscribe", user_id)

    async def _send(self, command: str, user_id: str) -> None:
        """Tell Redis now if connected. The user set is the truth: a change that fails here,
        or happens while disconnected, is made by the next (re)connection."""
        if self._pubsub is None or not self.connected.is_set():
            return
        try:
            await getattr(self._pubsub, command)(user_channel(user_id))
        except (RedisError, OSError) as error:
            logger.warning(
                "%s failed; the reconnection will redo it",
                command,
                extra={"userId": user_id, "error": str(error)},
            )

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with capped exponential backoff and jitter."""
        attempt = 0
        while True:
            try:
                await self._connect()
                attempt = 0
                await self._listen()
            except Exception as error:  # Redis gone, or a failed replay: start afresh
                self.connected.clear()
                await self._drop_connection()
                attempt += 1
                self.reconnects += 1
                delay = min(self._max_backoff_s, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
                logger.warning(
                    "redis subscriber lost its connection; reconnecting",
                    extra={
                        "error": f"{type(error).__name__}: {error}",
                        "retryInS": round(delay, 2),
                    },
                )
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.connected.clear()
                await self._drop_connection()
                raise

    async def _connect(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        # A dedicated channel keeps the connection open even when no user is held.
        await self._pubsub.subscribe(_KEEPALIVE_CHANNEL)
        # Connected first: users who come or go while this loop awaits are sent directly.
        self.connected.set()
        for user_id in list(self._users):
            if user_id in self._users:
                await self._pubsub.subscribe(user_channel(user_id))
        await self._on_resubscribed()

    async def _listen(self) -> None:
        while True:
            raw = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if raw is None or raw.get("type") != "message":
                continue
            try:
                user_id = _user_of(raw["channel"].decode())
                envelope = json.loads(raw["data"])
                stored = StoredMessage(envelope["id"], envelope["message"])
            except (ValueError, KeyError, TypeError) as error:
                logger.error("unreadable bus message dropped", extra={"error": str(error)})
                continue
            try:
                await self._deliver(user_id, stored)
            except Exception:
                logger.exception("delivering a bus message failed", extra={"userId": user_id})

    async def _drop_connection(self) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except (RedisError, OSError):
                pass
            self._pubsub = None
