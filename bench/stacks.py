"""Optional sampling of a process with py-spy during a measured window, summarised by module.

py-spy is not a project dependency: pass its path (`--py-spy PATH`) to a benchmark to use it.
It samples from outside the process; its `raw` output is one collapsed stack per line,
`frame;frame;...;frame COUNT`, each frame `function (path:line)`.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import harness

_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
_SITE = "site-packages/"
OUR_PACKAGES = frozenset({"services", "shared"})
_STDLIB = re.compile(r"/lib/python3\.\d+/")


@dataclass
class Sampler:
    process: subprocess.Popen[bytes]
    output: Path

    def stop(self) -> None:
        """py-spy writes its file when interrupted."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(py_spy: str, pid: int, output: Path) -> Sampler:
    command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(output)]
    command += ["--gil", "--rate", "200"]  # CPU in Python: only samples holding the GIL
    log = output.with_suffix(".log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return Sampler(process, output)


def module_of(frame: str) -> str:
    """A frame's module, shortened: `stripe/_http_client`, `asyncio/base_events`, `services/...`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("path")
    if _SITE in path:
        path = path.split(_SITE, 1)[1]
    elif _STDLIB.search(path):
        path = _STDLIB.split(path, maxsplit=1)[1]
    else:
        path = re.sub(r"^.*?/(services|shared|devstack|bench)/", r"\1/", path)
    return path.removesuffix(".py").removesuffix("/__init__")


def top_level(module: str) -> str:
    return module.split("/", 1)[0]


def read_stacks(output: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in output.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def summarise(output: Path, top: int = 15) -> None:
    """Print shares of samples: by the package running, and by our innermost call site."""
    stacks = read_stacks(output)
    total = sum(count for _, count in stacks)
    if total == 0:
        print(f"py-spy: no samples in {output}")
        return
    running: Counter[str] = Counter()
    call_site: Counter[str] = Counter()
    for frames, count in stacks:
        running[top_level(module_of(frames[-1]))] += count
        call_site[_call_site(frames)] += count
    print(f"py-spy: {total} samples holding the GIL, {output}")
    _print_shares("package running (self)", running, total, top)
    _print_shares("our innermost call site -> library it called", call_site, total, top)


def _call_site(frames: list[str]) -> str:
    """The innermost frame of our code, and the package it was calling into."""
    for depth in range(len(frames) - 1, -1, -1):
        if _is_ours(module_of(frames[depth])):
            below = frames[depth + 1] if depth + 1 < len(frames) else frames[depth]
            return f"{_short(frames[depth])} -> {top_level(module_of(below))}"
    return f"(event loop, not under our code) {top_level(module_of(frames[-1]))}"


def _is_ours(module: str) -> bool:
    """Our modules, less the entry points (`__main__`) that every stack passes through."""
    return top_level(module) in OUR_PACKAGES and not module.endswith("__main__")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return f"{match.group('function')} [{module_of(frame)}]" if match else frame.strip()


def _print_shares(title: str, counts: Counter[str], total: int, top: int) -> None:
    rows = [[name, f"{count * 100 / total:.1f}%"] for name, count in counts.most_common(top)]
    harness.print_table([title, "samples"], rows)
    print()
