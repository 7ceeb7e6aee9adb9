"""Where a running stack listens, so the tools follow the ports `make run` chose.

`make run` holds a lock on `<folder>/run.lock` while it runs (the kernel drops it when the
process ends, however it ends) and writes its addresses to `<folder>/stack.json`. A tool
trusts the file only while the lock is held; a second `make run` in the same folder finds the
lock taken and stops.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

DEFAULT_FOLDER = Path(".devstack")
ADDRESSES_FILE = "stack.json"
LOCK_FILE = "run.lock"
START_HINT = "start it with `make run` (in the repository's folder)"


class StackNotRunning(SystemExit):
    """No stack runs in that folder: the message is the one-line hint a tool prints."""


class StackAlreadyRunning(SystemExit):
    """Another `make run` holds the folder."""


@dataclass(frozen=True, slots=True)
class StackAddresses:
    pid: int
    kafka: str
    notifier: str
    webhook: str
    webhook_internal: str
    rider_page: str
    stripe: str | None
    logs: str


class RunLock:
    """The folder's run lock, held for as long as this object is open."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self._path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StackAlreadyRunning(
                f"devstack: already running in {self._path.parent} (pid {holder}); "
                "use that one, or stop it with Ctrl-C in its terminal"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def is_running(folder: Path) -> bool:
    """Whether some `make run` holds this folder's lock now."""
    path = folder / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write(folder: Path, addresses: StackAddresses) -> None:
    temporary = folder / f".{ADDRESSES_FILE}.tmp"
    temporary.write_text(json.dumps(asdict(addresses), indent=2) + "\n")
    temporary.replace(folder / ADDRESSES_FILE)


def forget(folder: Path) -> None:
    (folder / ADDRESSES_FILE).unlink(missing_ok=True)


def read(folder: Path = DEFAULT_FOLDER) -> StackAddresses:
    """The running stack's addresses, or StackNotRunning with the hint to print."""
    path = folder / ADDRESSES_FILE
    if not is_running(folder) or not path.exists():
        raise StackNotRunning(f"devstack: no stack is running in {folder}; {START_HINT}")
    try:
        return StackAddresses(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise StackNotRunning(
            f"devstack: {path} is unreadable ({error}); restart `make run`"
        ) from None
