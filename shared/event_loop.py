"""Which asyncio event loop the services run on.

uvloop (libuv) runs the same asyncio code with a cheaper loop and cheaper sockets; measured
in docs/benchmarks.md. EVENT_LOOP=asyncio falls back to the standard loop.
"""

from __future__ import annotations

import asyncio
from typing import Literal

EventLoopKind = Literal["uvloop", "asyncio"]


def install_event_loop(kind: EventLoopKind) -> None:
    """Make every loop this process creates from now on (aiohttp's, Faust's) of that kind."""
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
