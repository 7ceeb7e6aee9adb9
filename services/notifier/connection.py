"""One client socket: registration, replay from history, and live messages.

A socket starts unregistered. It registers once, through `userId` in the URL or a `register`
message; the server then sends `registration_success` and, from history, what the client has
not seen. Registration has a hard deadline from connect (pings do not extend it), a user has
at most so many sockets here, and a socket registered with a token closes when the token
expires; each refusal is an `error` message, then a close code.

Every message to the client goes through one bounded list of pending messages and a writer
task that exists only while something is pending (an idle socket keeps neither), so a client
that cannot keep up is closed (it resumes with `lastId`) instead of being buffered without
end. Each socket remembers the last message id it was sent and never sends an id that is not
after it: replayed and live messages can overlap, but no message arrives twice.

A socket registered without a token (auth off: the local stack only) lives no longer than a
token could (NOTIFIER_MAX_TOKEN_LIFETIME_S); it is then closed with 1001, to reconnect at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.notifier import metrics
from services.notifier.auth import TokenGrant, TokenVerifier
from services.notifier.frames import FrameProblem, parse_frame
from services.notifier.hub import Hub
from shared import messages
from shared.bus import NotificationBus, StoredMessage, is_after, is_message_id, still_relevant
from shared.messages import Message
from shared.model import identifier_problem
from shared.settings import Settings

logger = logging.getLogger(__name__)

ALREADY_REGISTERED_TEXT = "User already registered"
CLOSE_TIMEOUT_S = 5.0
FLUSH_TIMEOUT_S = 2.0
HISTORY_ATTEMPTS = 3
TOKEN_EXPIRED_TEXT = "token expired; reconnect with a new token"
LIFETIME_TEXT = "this socket reached its longest lifetime; reconnect"
# Redis could not be reached: the subscriber's reconnection replays again. Any other failure
# to replay is the socket's own (its history or its state) and closes only that socket.
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class SocketPolicy:
    # A full replay (shared.bus.HISTORY_LENGTH messages) must fit with room to spare.
    send_queue_size: int = 512
    registration_timeout_s: float = 30.0
    max_sockets_per_user: int = 10
    max_sockets: int = 15_000
    """Sockets in this process, registered or not."""
    max_lifetime_s: float = 86_400.0
    """How long a socket registered without a token stays open."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SocketPolicy:
        return cls(
            registration_timeout_s=settings.notifier_register_timeout_s,
            max_sockets_per_user=settings.notifier_max_sockets_per_user,
            max_sockets=settings.notifier_max_sockets,
            max_lifetime_s=settings.notifier_max_token_lifetime_s,
        )


class Connection:
    def __init__(
        self,
        socket: web.WebSocketResponse,
        bus: NotificationBus,
        hub: Hub,
        verifier: TokenVerifier | None,
        policy: SocketPolicy,
    ) -> None:
        self._socket = socket
        self._bus = bus
        self._hub = hub
        self._verifier = verifier
        self._policy = policy
        self.user_id: str | None = None
        self._via_url = False
        self._url_token: str | None = None
        self._url_last_id: str | None = None
        self._last_sent_id: str | None = None
        # Live messages that arrive while history is being replayed wait here.
        self._held: list[StoredMessage] | None = None
        self._replay_lock = asyncio.Lock()
        # Messages waiting to be written, and the task writing them; both exist only while
        # there is something to send, so an idle socket costs no queue and no task.
        self._pending: list[Message] | None = None
        self._writer: asyncio.Task[None] | None = None
        # The registration deadline, then (with a token) the token's expiry.
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    @property
    def replaying(self) -> bool:
        """True while history is being replayed (live messages wait until it is sent)."""
        return self._held is not None

    async def serve(self, query: Mapping[str, str]) -> None:
        """Speak the protocol until the socket closes."""
        self._set_timer(self._policy.registration_timeout_s, self._registration_timed_out)
        self._url_token = query.get("token")
        self._url_last_id = query.get("lastId")
        try:
            if "userId" in query:
                await self._register(query["userId"], self._url_token, self._url_last_id, True)
            await self._read_loop()
        finally:
            self._cancel_timer()
            if self.user_id is not None:
                await self._hub.remove(self.user_id, self)
            if self._closing is None:
                await self._stop_writer()
            else:
                await self._closing

    def push(self, stored: StoredMessage) -> None:
        """A live message for this socket's user; queued, never awaited."""
        if self.closing:
            return
        if self._held is None:
            self._send_stored(stored)
        elif len(self._held) < self._policy.send_queue_size:
            self._held.append(stored)
        else:
            self._too_slow()

    async def catch_up(self) -> bool:
        """Send what this socket has not seen from the user's history, then the held messages.

        With nothing sent yet, that is what is still relevant (open payment links, latest
        statuses); otherwise everything after the last id sent. False when Redis could not be
        reached (the subscriber's reconnection replays again); a failure of this socket's own
        closes it instead, so that it never holds up the other sockets.
        """
        assert self.user_id is not None
        async with self._replay_lock:
            if self._held is None:
                self._held = []
            try:
                return await self._replay(self.user_id)
            finally:
                held, self._held = self._held, None
                for stored in held:
                    self._send_stored(stored)

    def close_soon(self, code: int, reason: str, *, flush: bool = False) -> asyncio.Task[None]:
        """Close the socket once (later calls get the first close); `flush` sends queued
        messages first, within a short time."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, reason, flush), name="ws-close")
        return self._closing

    async def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        await self.close_soon(code, reason, flush=flush)

    def refuse(self, why: str, code: int, reason: str) -> asyncio.Task[None]:
        """Say `why` in an error message, then close with `code`; counted under `reason`."""
        metrics.REFUSED.labels(reason).inc()
        self._send(messages.error(why))
        return self.close_soon(code, reason.replace("_", " "), flush=True)

    async def _read_loop(self) -> None:
        while not self.closing:
            frame = await self._socket.receive()
            if frame.type is WSMsgType.TEXT:
                await self._on_text(frame.data)
            elif frame.type is WSMsgType.BINARY:
                self._send(messages.error("messages must be JSON text"))
            else:  # the socket is closing, closed or broken
                return

    def _set_timer(self, delay_s: float, callback: Callable[[], None]) -> None:
        """Replace the socket's one timer with `callback` after `delay_s`."""
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _registration_timed_out(self) -> None:
        # A timer, not a read timeout: pings and pongs end every read, and would extend it.
        if self.user_id is None and not self.closing:
            why = "no registration received in time"
            self.refuse(why, WSCloseCode.POLICY_VIOLATION, "registration_timeout")

    def _lifetime_reached(self) -> None:
        if not self.closing:
            self.refuse(LIFETIME_TEXT, WSCloseCode.GOING_AWAY, "lifetime")

    def _token_expired(self) -> None:
        if self.closing:
            return
        logger.info("closing a socket whose token expired", extra={"userId": self.user_id})
        self.refuse(TOKEN_EXPIRED_TEXT, WSCloseCode.POLICY_VIOLATION, "token_expired")

    async def _on_text(self, text: str) -> None:
        try:
            payload = parse_frame(text)
        except FrameProblem as unreadable:
            self._send(messages.error(str(unreadable)))
            return
        kind = payload.get("type")
        if kind != "register":
            problem = "message has no type" if kind is None else f"unknown type {kind!r:.60}"
            self._send(messages.error(problem))
        elif self.user_id is not None:
            note = messages.ALREADY_REGISTERED_TEXT if self._via_url else ALREADY_REGISTERED_TEXT
            self._send(messages.info(note))
        else:
            # The URL may carry the token and lastId while the message names the user.
            token = payload.get("token", self._url_token)
            last_id = payload.get("lastId", self._url_last_id)
            await self._register(payload.get("userId"), token, last_id, False)

    async def _register(
        self, user_id: object, token: object, last_id: object, via_url: bool
    ) -> None:
        problem = identifier_problem(user_id, "userId") or last_id_problem(last_id)
        if problem is not None:
            self._send(messages.error(problem))
            return
        assert isinstance(user_id, str)
        grant = self._verifier.verify(token, user_id) if self._verifier else None
        if isinstance(grant, str):
            logger.warning("registration refused", extra={"userId": user_id, "reason": grant})
            why = f"authentication failed: {grant}"
            await self.refuse(why, WSCloseCode.POLICY_VIOLATION, "authentication")
            return
        if self._hub.socket_count(user_id) >= self._policy.max_sockets_per_user:
            logger.warning("too many sockets for one user", extra={"userId": user_id})
            why = f"too many sockets for this user (at most {self._policy.max_sockets_per_user})"
            await self.refuse(why, WSCloseCode.POLICY_VIOLATION, "user_limit")
            return
        self._expire_with(grant)
        self.user_id = user_id
        self._via_url = via_url
        self._last_sent_id = last_id if isinstance(last_id, str) else None
        self._held = []  # hold live messages from the moment the hub knows this socket
        self._send(messages.registration_success(user_id))
        await self._hub.add(user_id, self)
        logger.info("registered", extra={"userId": user_id, "lastId": self._last_sent_id})
        await self.catch_up()

    def _expire_with(self, grant: TokenGrant | None) -> None:
        """Registered: no more deadline, but the token's expiry, or without a token the
        longest lifetime a token could have."""
        if grant is None:
            self._set_timer(self._policy.max_lifetime_s, self._lifetime_reached)
        else:
            self._set_timer(grant.expires_at - time.time(), self._token_expired)

    async def _replay(self, user_id: str) -> bool:
        try:
            history = await self._history(user_id)
        except REDIS_UNREACHABLE as error:
            logger.warning(
                "could not read history to replay", extra={"userId": user_id, "error": str(error)}
            )
            return False
        except Exception:  # this socket's own trouble: it must never reach other sockets
            logger.exception(
                "replaying history failed; closing the socket", extra={"userId": user_id}
            )
            why = "could not send the messages you missed; reconnect"
            self.refuse(why, WSCloseCode.INTERNAL_ERROR, "replay_failed")
            return True
        missed = history if self._last_sent_id is not None else still_relevant(history)
        for stored in missed:
            if self._send_stored(stored):
                metrics.REPLAYED.inc()
        return True

    async def _history(self, user_id: str) -> list[StoredMessage]:
        # Connections pooled before a Redis restart fail once each, so retry briefly.
        for attempt in range(1, HISTORY_ATTEMPTS):
            try:
                return await self._bus.history(user_id, after_id=self._last_sent_id)
            except REDIS_UNREACHABLE:
                await asyncio.sleep(0.05 * 2**attempt)
        return await self._bus.history(user_id, after_id=self._last_sent_id)

    def _send_stored(self, stored: StoredMessage) -> bool:
        if not is_after(stored.id, self._last_sent_id):
            return False
        self._last_sent_id = stored.id
        return self._send(stored.for_client())

    def _send(self, message: Message) -> bool:
        if self.closing:
            metrics.DROPPED.labels("closing").inc()
            return False
        if self._pending is None:
            self._pending = [message]
            self._writer = asyncio.create_task(self._write_pending(), name="ws-writer")
        elif len(self._pending) < self._policy.send_queue_size:
            self._pending.append(message)
        else:
            metrics.DROPPED.labels("slow_client").inc()
            self._too_slow()
            return False
        return True

    def _too_slow(self) -> None:
        logger.warning("closing a socket that cannot keep up", extra={"userId": self.user_id})
        metrics.SLOW_CLIENTS.inc()
        self.close_soon(WSCloseCode.TRY_AGAIN_LATER, "too slow to keep up")

    async def _write_pending(self) -> None:
        """Write until nothing is pending, then go away (the next message starts a new one)."""
        try:
            while self._pending:
                message = self._pending.pop(0)
                await self._socket.send_str(json.dumps(message, separators=(",", ":")))
                metrics.DELIVERED.labels(message["type"]).inc()
        except ConnectionError:
            pass  # the client went away; the read loop sees the socket close
        finally:
            self._pending = None

    async def _close(self, code: int, reason: str, flush: bool) -> None:
        if flush and self._writer is not None and not self._writer.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), FLUSH_TIMEOUT_S)
            except TimeoutError:
                pass
        unsent = len(self._pending or ())
        await self._stop_writer()
        if unsent:
            metrics.DROPPED.labels("closing").inc(unsent)
        try:
            await asyncio.wait_for(
                self._socket.close(code=code, message=reason.encode()), CLOSE_TIMEOUT_S
            )
        except TimeoutError:
            pass  # aiohttp has closed the transport; the client sees the connection drop

    async def _stop_writer(self) -> None:
        if self._writer is None:
            return
        self._writer.cancel()
        (outcome,) = await asyncio.gather(self._writer, return_exceptions=True)
        if isinstance(outcome, Exception):
            logger.error("socket writer failed", exc_info=outcome, extra={"userId": self.user_id})


def last_id_problem(value: object) -> str | None:
    if value is None or is_message_id(value):
        return None
    return "lastId must be a message id such as 1718000000000-0 (each part at most 2^64-1)"
