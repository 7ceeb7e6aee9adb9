"""The devstack tools as a developer runs them: without a stack they print one line saying so
(no traceback); against Kafka they say when the DLQ is empty and when a ride will be
dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import servers
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
