"""What every service process sets up before it starts: its event loop and its garbage
collector. Both measured in docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
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
# up to hundreds of MiB before the young generation was collected (issue 13). So the collector
# also runs, in full, whenever the bytes malloc has handed out grew this much since the last
# time: cyclic garbage of any generation is freed, and a process that does not grow (the
# notifier holding its sockets) never pays for it.
HEAP_GROWTH_BYTES = 8 * 2**20
HEAP_CHECK_INTERVAL_S = 0.01

HEAP_GROWTH_COLLECTIONS = Histogram(
    "payments_gc_heap_growth_collection_seconds",
    "Full garbage collections run because the malloc heap grew, and how long each took",
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
    heap = MallocHeap.of_this_process()
    if heap is None:
        # Without a byte count nothing bounds big cyclic garbage at a high young threshold:
        # keep CPython's, which collects often and so keeps it small.
        logger.warning("malloc statistics unavailable: default garbage-collector thresholds")
        return
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
    threading.Thread(
        target=collect_on_heap_growth, args=(heap,), name="gc-on-heap-growth", daemon=True
    ).start()


class MallocInfo(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33 and later)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


class MallocHeap:
    """The bytes malloc has handed out and not had back: where CPython keeps every object over
    512 bytes (buffers, large lists and dicts). Unlike RSS, which keeps the pages malloc keeps,
    it falls as soon as garbage is freed.
    """

    def __init__(self, mallinfo2: Callable[[], MallocInfo]) -> None:
        self._mallinfo2 = mallinfo2

    @classmethod
    def of_this_process(cls) -> MallocHeap | None:
        try:
            mallinfo2 = ctypes.CDLL(None).mallinfo2
        except (AttributeError, OSError):  # not glibc, or glibc older than 2.33
            return None
        mallinfo2.restype = MallocInfo
        mallinfo2.argtypes = []
        return cls(mallinfo2)

    def bytes_in_use(self) -> int:
        info = self._mallinfo2()
        return int(info.uordblks + info.hblkhd)  # in the arenas, and mapped on their own


def collect_on_heap_growth(heap: MallocHeap) -> None:
    """Forever: a full collection each time the heap grew HEAP_GROWTH_BYTES since the last.

    A thread, so that it works under any event loop (aiohttp's, Faust's) and while the loop is
    busy; CPython already collects in whichever thread happens to allocate.
    """
    baseline = heap.bytes_in_use()
    while True:
        time.sleep(HEAP_CHECK_INTERVAL_S)
        if heap.bytes_in_use() > baseline + HEAP_GROWTH_BYTES:
            with HEAP_GROWTH_COLLECTIONS.time():
                gc.collect()
            baseline = heap.bytes_in_use()
