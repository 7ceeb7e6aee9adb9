"""The application factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from . import checkout_page, control, persistence
from .api import create_v1_app
from .config import SimulatorConfig
from .simulator import SIMULATOR, Simulator, run_expiry_sweeper
from .webhooks import WebhookDeliverer


def create_app(
    config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """A Stripe simulator: /v1 API, hosted Checkout at /checkout/, test control at /_sim/."""
    app = web.Application()
    app[SIMULATOR] = Simulator(config or SimulatorConfig(), clock)
    app.add_subapp("/v1", create_v1_app())
    checkout_page.add_routes(app)
    control.add_routes(app)
    app.cleanup_ctx.append(_background_work)
    return app


async def _background_work(app: web.Application) -> AsyncIterator[None]:
    simulator = app[SIMULATOR]
    state_file = _state_file(simulator)
    async with aiohttp.ClientSession() as http:
        simulator.deliverer = deliverer = WebhookDeliverer(simulator.state, http)
        tasks = [asyncio.create_task(run_expiry_sweeper(simulator))]
        if state_file is not None:
            tasks.append(asyncio.create_task(state_file.keep_saved()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await deliverer.cancel_all()
            simulator.deliverer = None
            if state_file is not None:
                state_file.save()


def _state_file(simulator: Simulator) -> persistence.StateFile | None:
    """The state on disk, loaded now, when the simulator was asked to keep one."""
    if simulator.config.state_file is None:
        return None
    path = Path(simulator.config.state_file)
    persistence.load(simulator.state, path)
    return persistence.StateFile(simulator.state, path)
