"""The load generator of bench/notifier_sockets.py: one process holding many WebSocket clients.

It opens sockets for users `u<first>` .. `u<first + count - 1>` (URL registration,
`?userId=u<i>`) and notes, with time.time_ns() so other processes can compare, when each
pushed message arrives: after `sentNs` (the publisher's time.time_ns() just before its publish
call; pushed messages also carry `seq`) and after the time in its `id` (the bus's Redis stream
id, `<milliseconds>-<n>`: Redis's clock when the Lua script appended and PUBLISHed it).
It is driven by one JSON object a line on stdin and answers on stdout:

    (started)           -> {"event": "ready"}
    {"cmd": "connect"}  -> {"event": "connected", "startNs", "doneNs", "opened", "failed", ...}
    {"cmd": "count"}    -> {"event": "count", "received": N}
    {"cmd": "report"}   -> {"event": "report", "received": [[seq, fromSentNs, fromIdNs], ...],
                            "gcLongestMs": ..., ...}
    {"cmd": "close"}    -> {"event": "closed"}, then it exits

    .venv/bin/python -m bench.socket_clients --url ws://127.0.0.1:9091/payment-ws --count 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

Reply = dict[str, Any]

FD_MARGIN = 200  # files besides the sockets: the interpreter, pipes, the event loop
HANDSHAKE_TIMEOUT_S = 60.0
REGISTRATION_TYPE = "registration_success"


def raise_open_files(needed: int) -> int:
    """Raise this process's soft limit on open files to the hard limit; that limit.

    Exits with a message when `needed` files do not fit under the hard limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and needed > hard:
        sys.exit(f"{needed} open files needed, the hard limit is {hard}: use more processes")
    return hard


class GcPauses:
    """The cyclic garbage collector's pauses in this process, from gc.callbacks."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_s = 0.0
        self.total_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.count += 1
        self.total_s += took
        self.longest_s = max(self.longest_s, took)

    def reset(self) -> None:
        self.count, self.longest_s, self.total_s = 0, 0.0, 0.0

    def summary(self) -> Reply:
        return {"gcCount": self.count, "gcLongestMs": self.longest_s * 1000}


def freeze_heap() -> None:
    """Collect once, then no more: a load generator's own collections (a full one takes up to
    a second with thousands of sockets) would delay what it notes. It lives a minute or two."""
    gc.collect()
    gc.freeze()
    gc.disable()


class Clients:
    """This process's sockets, and what arrived on them."""

    def __init__(self, url: str, first: int, count: int, register: bool) -> None:
        self._url = url
        self._users = range(first, first + count)
        self._register = register
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self._readers: set[asyncio.Task[None]] = set()
        self._closing = False
        # (seq, arrival - sentNs, arrival - the id's milliseconds), in ns
        self.received: list[tuple[int, int, int]] = []
        self.unexpected: Counter[str] = Counter()  # frames that are not a pushed message
        self.dropped = 0  # sockets the server closed

    async def connect(self, session: aiohttp.ClientSession, concurrency: int) -> Reply:
        """Open every socket, `concurrency` handshakes at a time; registered when told so."""
        limit = asyncio.Semaphore(concurrency)
        errors: Counter[str] = Counter()
        started = time.time_ns()
        done = await asyncio.gather(*(self._open(session, u, limit, errors) for u in self._users))
        finished = [at for at in done if at is not None]
        freeze_heap()
        return {
            "event": "connected",
            "startNs": started,
            "doneNs": max(finished, default=started),
            "opened": len(finished),
            "failed": len(done) - len(finished),
            "errors": dict(errors),
        }

    async def _open(
        self,
        session: aiohttp.ClientSession,
        user: int,
        limit: asyncio.Semaphore,
        errors: Counter[str],
    ) -> int | None:
        async with limit:
            try:
                socket = await session.ws_connect(f"{self._url}?userId=u{user}", autoping=True)
                if self._register:
                    await _registered(socket)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                errors[f"{type(error).__name__}: {error}"[:120]] += 1
                return None
        at = time.time_ns()
        self._sockets.append(socket)
        reader = asyncio.create_task(self._read(socket))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        return at

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in socket:  # pings are answered by aiohttp (autoping)
            arrived = time.time_ns()
            if frame.type is aiohttp.WSMsgType.TEXT:
                self._note(frame.data, arrived)
            else:
                self.unexpected[frame.type.name] += 1
        if not self._closing:
            self.dropped += 1

    def _note(self, text: str, arrived: int) -> None:
        message = json.loads(text)
        if not isinstance(message.get("id"), str) or "sentNs" not in message:
            self.unexpected[str(message.get("type"))] += 1
            return
        stored_ms = int(message["id"].split("-")[0])
        seq, sent = int(message["seq"]), int(message["sentNs"])
        self.received.append((seq, arrived - sent, arrived - stored_ms * 1_000_000))

    def report(self, pauses: GcPauses) -> Reply:
        return {
            **pauses.summary(),
            "event": "report",
            "received": self.received,
            "unexpected": dict(self.unexpected),
            "dropped": self.dropped,
            "open": sum(1 for socket in self._sockets if not socket.closed),
        }

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(socket.close() for socket in self._sockets), return_exceptions=True)
        for reader in list(self._readers):
            reader.cancel()


async def _registered(socket: aiohttp.ClientWebSocketResponse) -> None:
    message = await socket.receive_json(timeout=HANDSHAKE_TIMEOUT_S)
    if message.get("type") != REGISTRATION_TYPE:
        raise ValueError(f"expected {REGISTRATION_TYPE}, got {message.get('type')}")


async def commands() -> AsyncIterator[Reply]:
    """The JSON lines on stdin, until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield json.loads(line)


def answer(reply: Reply) -> None:
    sys.stdout.write(json.dumps(reply, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    clients = Clients(args.url, args.first, args.count, args.register)
    pauses = GcPauses()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=HANDSHAKE_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        answer({"event": "ready"})
        async for command in commands():
            if command["cmd"] == "connect":
                answer(await clients.connect(session, args.concurrency))
                pauses.reset()
            elif command["cmd"] == "count":
                answer({"event": "count", "received": len(clients.received)})
            elif command["cmd"] == "report":
                answer(clients.report(pauses))
            elif command["cmd"] == "close":
                break
        await clients.close()
    with contextlib.suppress(BrokenPipeError):  # stdin closed: the parent may be gone
        answer({"event": "closed"})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--url", required=True, help="ws://host:port/path, without a query")
    add("--first", type=int, default=0, help="the first user's number")
    add("--count", type=int, required=True, help="sockets to open")
    add("--concurrency", type=int, default=50, help="handshakes in flight")
    registration = "wait for each socket's registration_success (--no-register: handshake only)"
    add("--register", action=argparse.BooleanOptionalAction, default=True, help=registration)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    raise_open_files(args.count + FD_MARGIN)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
