"""What `make run` shows: each process's state, the table, the one ready line, and the table
again whenever a process turns unhealthy or healthy again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from devstack.supervisor import Supervisor

if TYPE_CHECKING:
    from devstack.stack import Stack

READY_TIMEOUT_S = 180.0
# The watch first: it shows what the ride that ends next does.
NEXT_COMMANDS = "make watch RIDER=u1 | make ride RIDER=u1 FARE=25.50 | make dlq"


def readiness(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return "ready" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        try:
            failed = json.loads(error.read()).get("failed", {})
            return "not ready: " + ", ".join(f"{k}: {v}" for k, v in failed.items())[:80]
        except ValueError:
            return f"HTTP {error.code}"
    except OSError as error:
        return f"down ({error})"[:60]


def states(stack: Stack, supervisor: Supervisor) -> dict[str, str]:
    """Each row's state: `ready`, `running`, `not ready: ...`, or how it crashed."""
    crashed = {item.name: item for item in supervisor.watched if item.down}
    result = {}
    for name, _, ready_url in stack.endpoints():
        if name in crashed:
            result[name] = crashed[name].describe_crash()
        else:
            result[name] = "running" if ready_url is None else readiness(ready_url)
    return result


def is_healthy(state: str) -> bool:
    return state in ("ready", "running")


def status_table(stack: Stack, shown: dict[str, str]) -> str:
    lines = [f"{'process':<20} {'state':<40} where"]
    for name, where, _ in stack.endpoints():
        lines.append(f"{name:<20} {shown.get(name, '?'):<40} {where}")
    lines.append(f"logs: {stack.logs}/    stop: Ctrl-C")
    return "\n".join(lines)


def ready_line(stack: Stack, seconds: float) -> str:
    return (
        f"devstack: ready in {seconds:.0f} s. Rider page: {stack.addresses().rider_page}  "
        f"Next, in another terminal: {NEXT_COMMANDS}  (stop: Ctrl-C)"
    )


async def wait_until_ready(stack: Stack, supervisor: Supervisor, stopping: asyncio.Event) -> bool:
    """Until every process is up and ready; a line now and then says what it waits for."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    next_note = time.monotonic() + 10
    while not stopping.is_set():
        current = await asyncio.to_thread(states, stack, supervisor)
        waiting = {name: state for name, state in current.items() if not is_healthy(state)}
        if not waiting:
            return True
        if time.monotonic() >= deadline:
            print(status_table(stack, current), flush=True)
            print(f"devstack: not ready after {READY_TIMEOUT_S:.0f} s; see the logs", flush=True)
            return False
        if time.monotonic() >= next_note:
            print(f"devstack: waiting for {', '.join(waiting)} ...", flush=True)
            next_note = time.monotonic() + 10
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.5)
    return False


async def watch(stack: Stack, supervisor: Supervisor, stopping: asyncio.Event) -> None:
    """Print the table again whenever a process turns unhealthy or healthy again."""
    healthy_before: dict[str, bool] = {}
    while not stopping.is_set():
        current = await asyncio.to_thread(states, stack, supervisor)
        healthy = {name: is_healthy(state) for name, state in current.items()}
        if healthy_before and healthy != healthy_before:
            print(status_table(stack, current), flush=True)
            if all(healthy.values()):
                print("devstack: all ready again", flush=True)
        healthy_before = healthy
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 2)
