"""What every service process sets up before it starts: its event loop and its garbage
collector. Both measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Literal

EventLoopKind = Literal["uvloop", "asyncio"]

# CPython collects its youngest generation every 700 net allocations by default and promotes
# whatever is alive at that instant. A busy service allocates hundreds of thousands of
# objects a second, so its in-flight messages reach the oldest generation by the thousand,
# and a full collection (a pause that walks every socket's objects: about 0.7 s with 10,000
# WebSockets) follows every few seconds. Collecting the young every 50,000 allocations
# promotes almost nothing that dies young.
YOUNG_GENERATION_THRESHOLD = 50_000


def prepare_process(event_loop: EventLoopKind) -> None:
    install_event_loop(event_loop)
    tune_garbage_collector()


def install_event_loop(kind: EventLoopKind) -> None:
    """Make every loop this process creates from now on (aiohttp's, Faust's) of that kind.

    uvloop (libuv) runs the same asyncio code with a cheaper loop and cheaper sockets.
    """
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def tune_garbage_collector() -> None:
    # What is loaded by now (modules, classes, settings) lives as long as the process: keep it
    # out of every future collection.
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
