"""`make run` as a developer uses it (the `stack` fixture, tests/devstack/conftest.py), and the
tools finding it through its folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import pytest

from devstack import prometheus, servers
from tests.devstack.conftest import ROOT, RunningStack
from tests.devstack.test_tools import run_tool
from tests.helpers import http_status


async def test_one_ready_line_names_the_rider_page_and_the_next_commands(
    stack: RunningStack,
) -> None:
    printed = stack.printed()
    [ready] = [line for line in printed.splitlines() if line.startswith("devstack: ready")]
    assert f"http://127.0.0.1:{stack.ports.rider_page}/" in ready
    assert ready.index("make watch") < ready.index("make ride")  # watch, then a ride ends
    assert "not ready" not in printed.split(ready)[0]  # no table of half-started services
    addresses = json.loads((stack.folder / "stack.json").read_text())
    assert addresses["kafka"] == f"127.0.0.1:{stack.ports.kafka}"
    assert addresses["notifier"] == f"ws://127.0.0.1:{stack.ports.notifier}/payment-ws"


@pytest.mark.skipif(prometheus.binary() is None, reason="prometheus is not installed")
async def test_the_prometheus_link_it_prints_opens_the_alerts(stack: RunningStack) -> None:
    rows = [line for line in stack.printed().splitlines() if line.startswith("prometheus ")]
    assert rows, stack.printed()
    [link] = {row.split()[-1] for row in rows}
    assert link.startswith(f"http://127.0.0.1:{stack.ports.prometheus}/"), link
    assert link.endswith("/alerts") and await http_status(link) == 200, link


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
                rider_page = f"http://127.0.0.1:{stack.ports.rider_page}/?result=cancel"
                assert [r.status for r in response.history] == [303]
                assert (str(response.url), response.status) == (rider_page, 200)

        update = await next_line(watch)
        assert update["type"] == "payment_status_update"
        assert (update["rideId"], update["status"]) == (ride, "canceled")
    finally:
        watch.terminate()
        await watch.wait()


async def test_every_process_it_starts_listens_on_loopback_only(stack: RunningStack) -> None:
    """On a shared network nobody else reaches the open payments API or the notifier."""
    children = psutil.Process(stack.process.pid).children(recursive=True)
    listening: dict[str, set[str]] = {}
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            sockets = child.net_connections(kind="inet")
            hosts = {s.laddr.ip for s in sockets if s.status == psutil.CONN_LISTEN}
            listening[f"{child.pid} {' '.join(child.cmdline()[:3])}"] = hosts
    services = [name for name in listening if "services." in name]
    assert len(services) == 3 and any("rider_page" in name for name in listening), listening
    assert all(hosts <= {"127.0.0.1"} for hosts in listening.values()), listening
    printed = stack.printed()
    assert "every interface" not in printed


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
