"""The devstack tools as a developer runs them: without a stack, or with an argument they cannot
use, they print one line saying so (no traceback); against Kafka they say when the DLQ is empty
and when a ride will be dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import dead_letters, servers
from devstack.stack import Ports
from tests.conftest import RunningPart


def run_tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_hint(result: subprocess.CompletedProcess[str], hint: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert hint in result.stderr


@pytest.mark.parametrize(
    "tool",
    [
        ["devstack", "ride", "--user", "u1", "--fare", "5"],
        ["devstack", "watch", "--user", "u1"],
        ["devstack", "dlq"],
        ["devstack", "dlq", "replay", "--all"],
        ["devstack", "refund", "--ride", "r1"],
        ["devstack", "outstanding", "--user", "u1"],
    ],
)
async def test_without_a_stack_each_tool_says_how_to_start_one(
    tool: list[str], tmp_path: Path
) -> None:
    result = await asyncio.to_thread(run_tool, *tool, "--folder", str(tmp_path))
    assert_one_line_hint(result, "no stack is running")
    assert "make run" in result.stderr


async def test_the_dlq_tool_names_the_kafka_it_cannot_reach() -> None:
    nowhere = f"127.0.0.1:{servers.free_port()}"
    result = await asyncio.to_thread(
        run_tool, "services.consumer.dlq", "list", env={"KAFKA_BOOTSTRAP_SERVERS": nowhere}
    )
    assert_one_line_hint(result, f"cannot reach Kafka at {nowhere}")


async def test_the_dlq_tool_says_when_the_dlq_is_empty(own_kafka: RunningPart) -> None:
    result = await asyncio.to_thread(
        run_tool, "services.consumer.dlq", "list", env={"KAFKA_BOOTSTRAP_SERVERS": own_kafka.url}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "payment-events-dlq is empty" in result.stderr


@pytest.mark.parametrize(
    ("user", "fare", "why"),
    [
        ("u1", "abc", "is not a decimal number"),
        ("u1", "-5", "fare"),
        ("u1", "0", "fare"),
        ("", "5", "userId"),
        ("u1", "0.49", "fare 0.49 USD is below Stripe's minimum charge of 0.50 USD"),
    ],
)
async def test_a_ride_that_will_be_dead_lettered_says_so_and_why(
    kafka: RunningPart, user: str, fare: str, why: str
) -> None:
    args = ["devstack", "ride", "--kafka", kafka.url, "--user", user, "--fare", fare]
    result = await asyncio.to_thread(run_tool, *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["fare"] == fare  # published all the same, to try the DLQ
    assert "will dead-letter it" in result.stderr
    assert why in result.stderr


async def test_a_valid_ride_publishes_quietly(kafka: RunningPart) -> None:
    args = ["devstack", "ride", "--kafka", kafka.url, "--user", "u1", "--fare", "25.50"]
    result = await asyncio.to_thread(run_tool, *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("tool", "hint"),
    [
        (["devstack", "outstanding", "--user", ""], "`make outstanding RIDER=u1`"),
        (["devstack", "outstanding", "--user", " "], "`make outstanding RIDER=u1`"),
        (["devstack", "watch", "--user", ""], "`make watch RIDER=u1`"),
        (["devstack", "dlq", "replay", "--ref", "bogus"], "malformed: expected P:O"),
        (["devstack", "dlq", "replay", "--ref", ""], "malformed: expected P:O"),
        (["devstack", "dlq", "replay", "--ref", "refunds:x:1"], "malformed: expected P:O"),
        (["devstack", "dlq", "replay"], "REF=all"),
        (["devstack", "dlq", "--topic", "payments"], "rides (payment-events-dlq)"),
        (["devstack", "dlq", "replay", "--topic", "rides", "--ref", "refunds:0:1"], "not in"),
    ],
)
async def test_an_argument_a_tool_cannot_use_gets_one_line_naming_it(
    tool: list[str], hint: str, tmp_path: Path
) -> None:
    """Checked before looking for the stack: the folder holds none."""
    result = await asyncio.to_thread(run_tool, *tool, "--folder", str(tmp_path))
    assert_one_line_hint(result, hint)


async def test_the_dlq_tool_says_a_malformed_ref_is_malformed() -> None:
    nowhere = f"127.0.0.1:{servers.free_port()}"  # checked before Kafka is asked
    result = await asyncio.to_thread(
        run_tool,
        "services.consumer.dlq",
        "replay",
        "--ref",
        "bogus",
        env={"KAFKA_BOOTSTRAP_SERVERS": nowhere},
    )
    assert_one_line_hint(result, "'bogus' is not a dead letter's ref: expected P:O")


async def test_outstanding_names_the_payments_api_it_cannot_reach(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{servers.free_port()}/payment-service"
    result = await asyncio.to_thread(
        run_tool, "devstack", "outstanding", "--user", "u1", "--api", nowhere
    )
    assert_one_line_hint(result, f"cannot reach the payments API at {nowhere}")


def test_dlq_names_every_empty_topic(capsys: pytest.CaptureFixture[str]) -> None:
    dead_letters.print_letters({"payment-events-dlq": [], "refund-requests-dlq": []})
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err == "dlq: payment-events-dlq and refund-requests-dlq are empty\n"


async def test_a_busy_port_says_how_to_choose_others(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = {name: servers.free_port() for name in Ports.__dataclass_fields__}
        flags = [f"--{name.replace('_', '-')}-port={port}" for name, port in ports.items()]
        result = await asyncio.to_thread(
            run_tool, "devstack", "run", "--folder", str(tmp_path), *flags, f"--kafka-port={busy}"
        )
    assert_one_line_hint(result, f"kafka port {busy}")
    assert "`make run ARGS=--help`" in result.stderr
