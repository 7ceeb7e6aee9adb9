"""What every service process sets up before it starts: its event loop and its garbage
collector. Both measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Literal

from prometheus_client import Histogram

logger = logging.getLogger(__name__)

EventLoopKind = Literal["uvloop", "asyncio"]

# CPython collects its youngest generation every 700 net allocations by default and promotes
# whatever is alive at that instant. A busy service allocates hundreds of thousands of
# objects a second, so its in-flight messages reach the oldest generation by the thousand,
# and a full collection (a pause that walks every socket's objects: about 0.7 s with 10,000
# WebSockets) follows every few seconds. Collecting the young every 50,000 allocations
# promotes almost nothing that dies young.
YOUNG_GENERATION_THRESHOLD = 50_000

# The thresholds count objects, not bytes: a request that leaves a 512 KiB buffer in a
# reference cycle of a few dozen objects counts as a few dozen. At 50,000 such garbage piled
# up to hundreds of MiB before the young generation was collected (issue 13). So a thread
# watches the process's resident memory and runs a full collection once it grew by half since
# the last one (and by 16 MiB at least). Full, because only a full one is sure to free garbage
# that was alive at an earlier collection and got promoted (a request in flight then: young
# collections alone let it pile up, measured). Growth in proportion to what lives, because a
# full collection walks every live object (0.7 s with 10,000 sockets): its cost stays in
# proportion to the memory allocated. A notifier pays three while 10,000 sockets connect, then
# none while it holds them and delivers. Memory stays within about 1.5 times what lives and
# is in flight.
FULL_COLLECTION_GROWTH = 1.5
FULL_COLLECTION_MIN_GROWTH_BYTES = 16 * 2**20
MEMORY_CHECK_INTERVAL_S = 0.02

COLLECTIONS_ON_GROWTH = Histogram(
    "payments_gc_memory_growth_collection_seconds",
    "Full garbage collections run because resident memory grew, and how long each took",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


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
    memory = ResidentMemory.of_this_process()
    if memory is None:
        # Without a memory reading nothing bounds big cyclic garbage at a high young threshold:
        # keep CPython's, which collects often and so keeps it small.
        logger.warning("resident memory unreadable: default garbage-collector thresholds")
        return
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
    threading.Thread(
        target=collect_on_memory_growth, args=(memory,), name="gc-on-growth", daemon=True
    ).start()


class ResidentMemory:
    """This process's resident set, from /proc (Linux), cheap enough to read 50 times a second."""

    def __init__(self, statm: int) -> None:
        self._statm = statm
        self._page_bytes = os.sysconf("SC_PAGE_SIZE")

    @classmethod
    def of_this_process(cls) -> ResidentMemory | None:
        try:
            return cls(os.open("/proc/self/statm", os.O_RDONLY))
        except OSError:
            return None

    def bytes(self) -> int:
        return int(os.pread(self._statm, 128, 0).split()[1]) * self._page_bytes


def collect_on_memory_growth(memory: ResidentMemory) -> None:
    """Forever: a full collection each time resident memory grew enough since the last.

    A thread, so that it works under any event loop (aiohttp's, Faust's) and while the loop is
    busy; CPython already collects in whichever thread happens to allocate.
    """
    # The lowest reading since the last collection: the nearest to what lives, as the process
    # goes on allocating while (and right after) it collects.
    lowest = memory.bytes()
    while True:
        time.sleep(MEMORY_CHECK_INTERVAL_S)
        resident = memory.bytes()
        lowest = min(lowest, resident)
        if grew_enough(resident, since=lowest):
            collect_everything()
            lowest = memory.bytes()


def grew_enough(resident: int, since: int) -> bool:
    return resident > max(since * FULL_COLLECTION_GROWTH, since + FULL_COLLECTION_MIN_GROWTH_BYTES)


def collect_everything() -> None:
    with COLLECTIONS_ON_GROWTH.time():
        gc.collect()
        # malloc keeps freed memory for reuse; handing it back makes the next reading count
        # what lives (and the pod's memory what it needs).
        release_free_memory()


def release_free_memory() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return None
    return trim


_malloc_trim = _find_malloc_trim()
