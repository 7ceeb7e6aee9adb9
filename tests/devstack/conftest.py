"""The devstack's tests share `make run` as a developer starts it: `python -m devstack run` on
free ports in a folder of the test module's own (`stack`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import servers
from devstack.stack import Ports
from tests.e2e.conftest import own_kafka  # noqa: F401 - a broker of the test's own
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
