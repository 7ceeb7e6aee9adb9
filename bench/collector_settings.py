"""Run a service under a chosen garbage-collector setting, so that settings can be measured
side by side in one benchmark run:

    python -m bench.collector_settings SETTING services.notifier

SETTING is one of:
  shared-runtime   what shared/runtime.py does (at this commit: young generation every 50,000
                   allocations, and collections when resident memory grows)
  young-50000      the setting of ff7e3b1: import-time objects frozen, young generation every
                   50,000 allocations, nothing else (any young-<N> works alike)
  cpython          CPython's defaults: nothing frozen, young generation every 700
"""

from __future__ import annotations

import gc
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared import runtime

SHARED_RUNTIME = "shared-runtime"
CPYTHON = "cpython"
YOUNG = "young-"
EXAMPLES = [SHARED_RUNTIME, "young-50000", CPYTHON]


def collector_setting(name: str) -> Callable[[], None]:
    """What the service runs instead of shared.runtime.tune_garbage_collector."""
    if name == SHARED_RUNTIME:
        return runtime.tune_garbage_collector
    if name == CPYTHON:
        return lambda: None
    if name.startswith(YOUNG) and name[len(YOUNG) :].isdigit():
        return lambda: _freeze_with_young_threshold(int(name[len(YOUNG) :]))
    raise ValueError(f"unknown collector setting {name!r}; try one of {', '.join(EXAMPLES)}")


def _freeze_with_young_threshold(threshold: int) -> None:
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(threshold, middle, oldest)


def main() -> None:
    setting, module, *rest = sys.argv[1:]
    runtime.tune_garbage_collector = collector_setting(setting)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
