"""Runs `services.consumer` with Kafka fetches held at most BENCH_FETCH_MAX_WAIT_MS (bench only).

tansu holds a fetch that found no records for the whole of its max wait, even when records
arrive meanwhile (Kafka answers as soon as they do), and Faust asks for 1,500 ms: on tansu a
record waits 0.4 s at the median before the consumer sees it, whatever the consumer does. The
latency benchmarks shorten the wait to measure the consumer, not the test broker.

    BENCH_FETCH_MAX_WAIT_MS=100 PYTHONPATH=<tree> python bench/short_fetch_consumer.py
"""

from __future__ import annotations

import os
import runpy
from typing import Any

import aiokafka

_original_init = aiokafka.AIOKafkaConsumer.__init__


def _init(self: aiokafka.AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
    kwargs["fetch_max_wait_ms"] = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "100"))
    _original_init(self, *args, **kwargs)


aiokafka.AIOKafkaConsumer.__init__ = _init
runpy.run_module("services.consumer", run_name="__main__", alter_sys=True)
