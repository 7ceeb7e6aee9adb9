"""Issue 24, finding 8: what `make run` starts listens on 127.0.0.1 unless `--host` says
otherwise, and its services know they run locally (the only place they may go without auth)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devstack import servers
from devstack.stack import Ports, Stack, StackOptions
from tests.devstack.test_tools import run_tool


def command_host(process: servers.ChildProcess) -> str:
    return process.command[process.command.index("--host") + 1]


@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_the_stack_binds_its_services_and_pages_to_its_host(
    tmp_path: Path, host: str | None
) -> None:
    options = StackOptions(tmp_path, Ports(), **({} if host is None else {"host": host}))
    stack = Stack(options)
    expected = host or "127.0.0.1"
    services = stack.service_processes()
    ours = [p for p in services if p.command[2].startswith("services.")]
    assert [p.command[2] for p in ours] == [
        "services.consumer",
        "services.webhook",
        "services.notifier",
    ]
    for process in ours:
        assert process.env["PAYMENTS_ENVIRONMENT"] == "local"
        assert process.env["BIND_HOST"] == expected
    (page,) = [p for p in services if p.command[2] == "devstack.rider_page"]
    assert command_host(page) == expected
    assert command_host(stack.stripe_simulator()) == expected


async def test_make_run_help_documents_the_host() -> None:
    result = await asyncio.to_thread(run_tool, "devstack", "run", "--help")
    assert result.returncode == 0, result.stderr
    assert "--host {127.0.0.1,0.0.0.0}" in result.stdout
    assert "every interface" in " ".join(result.stdout.split())
