"""`make run` as a developer uses it: `python -m devstack run` on free ports in a folder of the
test's own, and the tools finding it through that folder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack import servers
from devstack.stack import Ports
from tests.devstack.test_tools import run_tool
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    folder: Path
    output: Path
    ports: Ports

    def printed(self) -> str:
        return self.output.read_text()


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningStack]:
    folder = tmp_path_factory.mktemp("devstack")
    ports = Ports(**{name: servers.free_port() for name in Ports.__dataclass_fields__})
    flags = [
        f"--{name.replace('_', '-')}-port={getattr(ports, name)}"
        for name in Ports.__dataclass_fields__
    ]
    output = folder.parent / f"{folder.name}-output.txt"
    process = start_devstack_run(["--folder", str(folder), *flags], output)
    running = RunningStack(process, folder, output, ports)

    async def ready() -> bool:
        assert process.poll() is None, f"devstack run exited: {running.printed()}"
        return "devstack: ready" in running.printed()

    try:
        await eventually(ready, timeout_s=240, every_s=0.5, what="the ready line")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            await asyncio.to_thread(process.wait, 60)


# Settings of the developer's own that would change what `make run` does.
OWN_SETTINGS = (
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "PAYMENTS_CONFIG",
    "SUCCESS_REDIRECT_URL",
    "CANCEL_REDIRECT_URL",
)


def start_devstack_run(args: list[str], output: Path) -> subprocess.Popen[str]:
    env = {name: value for name, value in os.environ.items() if name not in OWN_SETTINGS}
    with output.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devstack", "run", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )


async def test_one_ready_line_names_the_rider_page_and_the_next_commands(
    stack: RunningStack,
) -> None:
    printed = stack.printed()
    [ready] = [line for line in printed.splitlines() if line.startswith("devstack: ready")]
    assert f"http://127.0.0.1:{stack.ports.rider_page}/" in ready
    assert "make ride" in ready and "make watch" in ready
    assert "not ready" not in printed.split(ready)[0]  # no table of half-started services
    addresses = json.loads((stack.folder / "stack.json").read_text())
    assert addresses["kafka"] == f"127.0.0.1:{stack.ports.kafka}"
    assert addresses["notifier"] == f"ws://127.0.0.1:{stack.ports.notifier}/payment-ws"


async def test_a_second_run_in_the_same_folder_says_one_is_running(stack: RunningStack) -> None:
    other_ports = [f"--kafka-port={servers.free_port()}"]
    result = await asyncio.to_thread(
        run_tool, "devstack", "run", "--folder", str(stack.folder), *other_ports
    )
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert "Traceback" not in result.stderr


async def test_reset_refuses_while_the_stack_runs(stack: RunningStack) -> None:
    result = await asyncio.to_thread(run_tool, "devstack", "reset", "--folder", str(stack.folder))
    assert result.returncode == 1
    assert "stop it" in result.stderr
    assert (stack.folder / "stack.json").exists()


async def test_a_ride_abandoned_on_checkout_ends_canceled_and_returns_to_the_rider_page(
    stack: RunningStack, unique: str
) -> None:
    user, ride = f"u-{unique}", f"ride-{unique}"
    folder = ["--folder", str(stack.folder)]
    watch = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "devstack", "watch", "--user", user, *folder],
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert (await next_line(watch))["type"] == "registration_success"
        ridden = await asyncio.to_thread(
            run_tool, "devstack", "ride", "--user", user, "--fare", "7.00", "--ride", ride, *folder
        )
        assert ridden.returncode == 0, ridden.stderr
        link = await next_line(watch)
        assert link["type"] == "payment_url" and link["rideId"] == ride

        async with aiohttp.ClientSession() as http:
            async with http.post(link["paymentUrl"] + "/abandon") as response:
                page = await response.text()
        rider_page = f"http://127.0.0.1:{stack.ports.rider_page}/?result=cancel"
        assert f'href="{rider_page}"' in page

        update = await next_line(watch)
        assert update["type"] == "payment_status_update"
        assert (update["rideId"], update["status"]) == (ride, "canceled")
    finally:
        watch.terminate()
        await watch.wait()


async def test_ctrl_c_stops_it_and_then_reset_wipes_the_data(stack: RunningStack) -> None:
    """Last in this module: it stops the module's stack."""
    watch = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "devstack", "watch", "--user", "u-stop"],
        *["--folder", str(stack.folder)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert (await next_line(watch))["type"] == "registration_success"

    stack.process.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(stack.process.wait, 60) == 0
    assert "devstack: stopped" in stack.printed()
    _, complaint = await asyncio.wait_for(watch.communicate(), timeout=60)
    assert watch.returncode == 1  # a watcher of a stopped stack says so and ends
    assert "no stack is running" in complaint.decode().splitlines()[-1]
    assert not (stack.folder / "stack.json").exists()
    assert (stack.folder / "stripe-simulator" / "state.json").exists()

    result = await asyncio.to_thread(run_tool, "devstack", "reset", "--folder", str(stack.folder))
    assert result.returncode == 0, result.stderr
    assert not stack.folder.exists()


async def next_line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    assert line, "watch ended"
    message: dict[str, Any] = json.loads(line)
    return message
