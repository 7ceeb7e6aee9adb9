"""The local stack's supervisor against real child processes: a process that dies is shown with
how it ended and its log, and started again after a delay that grows with each crash."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from devstack import servers
from devstack.supervisor import FIRST_DELAY_S, Supervisor, Watched
from tests.helpers import eventually


def small_server(logs: Path) -> servers.ChildProcess:
    port = servers.free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return servers.ChildProcess("small-server", command, port, logs / "small-server.log")


def kill_hard(process: servers.ChildProcess) -> None:
    """SIGKILL, as the OOM killer would, leaving the exit code for the supervisor to find."""
    assert process.process is not None
    process.process.send_signal(signal.SIGKILL)
    process.process.wait()


async def test_a_killed_process_is_reported_and_restarted_with_growing_delays(
    tmp_path: Path,
) -> None:
    process = small_server(tmp_path)
    process.start()
    watched = Watched(process)
    lines: list[str] = []
    supervisor = Supervisor([watched], lines.append)
    try:
        kill_hard(process)
        await supervisor.check_once()
        assert watched.down
        assert "killed by SIGKILL" in watched.describe_crash()
        assert str(process.log_path) in watched.describe_crash()
        assert lines[-1].startswith("devstack: small-server killed by SIGKILL")

        async def restarted() -> bool:
            await supervisor.check_once()
            return not watched.down and process.running

        await eventually(restarted, timeout_s=30, what="the restart")
        assert watched.restarts == 1
        assert lines[-1] == "devstack: small-server restarted (restart 1)"

        kill_hard(process)
        await supervisor.check_once()  # a second crash in a row waits twice as long
        assert "restarting in 2 s" in watched.describe_crash()
        assert watched.restart_at is not None
        await eventually(restarted, timeout_s=30, what="the second restart")
        assert watched.crashes_in_a_row == 2 and FIRST_DELAY_S == 1.0
    finally:
        process.stop()


async def test_an_exit_code_is_shown(tmp_path: Path) -> None:
    port = servers.free_port()
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    process = servers.ChildProcess("quitter", command, port, tmp_path / "quitter.log")
    try:
        process.start(timeout_s=0.5)
    except RuntimeError:
        pass  # it exits before listening, as a crashing service does
    watched = Watched(process)
    await Supervisor([watched], lambda _: None).check_once()
    assert "exited with code 3" in watched.describe_crash()
