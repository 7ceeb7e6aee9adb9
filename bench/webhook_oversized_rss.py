"""Webhook memory under oversized POSTs (issue 13): the webhook's RSS while --posts bodies
just over its 512 KiB limit arrive from --senders at once, for each garbage-collector setting
in --collector (see bench/collector_settings.py), side by side in one run.

Each setting gets a fresh `python -m services.webhook` (LOG_LEVEL=WARNING) on the same tansu,
SecantusDB and Redis. RSS (from the OS) is read before the POSTs (after a few warm-up ones),
after every answer (the peak), right after the last one, and once the process was idle for
--settle-s. The POSTs carry no signature: the body limit refuses them first.

    .venv/bin/python bench/webhook_oversized_rss.py [--posts 500] [--senders 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import psutil  # type: ignore[import-untyped]

from bench import harness
from bench.collector_settings import EXAMPLES, collector_setting
from bench.webhook_throughput import PATH, webhook_env
from devstack import servers

WEBHOOK = "webhook"
BODY_LIMIT = 512 * 1024
POD_LIMIT_MIB = 256
WARM_POSTS = 8


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--posts", type=int, default=500, help="oversized POSTs per setting (default 500)")
    add("--senders", type=int, default=8, help="POSTs in flight (default 8)")
    add("--over-by", type=int, default=1024, help="bytes over the 512 KiB limit (default 1024)")
    add("--settle-s", type=float, default=2.0, help="idle time before the last RSS reading")
    add(
        "--collector",
        nargs="+",
        default=["young-50000", "shared-runtime"],
        help=f"collector settings to compare (default: young-50000 shared-runtime; {EXAMPLES})",
    )
    args = parser.parse_args()
    for setting in args.collector:
        collector_setting(setting)  # an unknown name stops here, before anything starts
    return args


@dataclass(frozen=True, slots=True)
class Run:
    setting: str
    posts: int
    elapsed_s: float
    statuses: Counter[str]
    rss_before: int
    rss_peak: int
    rss_after: int
    rss_settled: int
    cpu_ms_per_post: float


async def measure(
    setting: str, env: dict[str, str], parts: harness.Parts, args: argparse.Namespace
) -> Run:
    print(f"{setting}: {args.posts} POSTs of {BODY_LIMIT + args.over_by} bytes ...", flush=True)
    env = {**env, "INTERNAL_PORT": str(servers.free_port())}
    webhook = parts.service(WEBHOOK, "bench.collector_settings", env, [setting, "services.webhook"])
    process = psutil.Process(parts.pids()[WEBHOOK])
    url = f"http://127.0.0.1:{webhook.port}{PATH}"
    body = b"x" * (BODY_LIMIT + args.over_by)
    statuses: Counter[str] = Counter()
    peak = 0

    async def post_all(http: aiohttp.ClientSession, count: int) -> None:
        nonlocal peak
        remaining = iter(range(count))

        async def sender() -> None:
            nonlocal peak
            for _ in remaining:
                statuses[await _post(http, url, body)] += 1
                peak = max(peak, process.memory_info().rss)

        await asyncio.gather(*(sender() for _ in range(args.senders)))

    async with aiohttp.ClientSession() as http:
        await post_all(http, WARM_POSTS)
        await harness.wait_quiet(process.pid)
        statuses.clear()
        rss_before = peak = process.memory_info().rss
        cpu_before = harness.cpu_seconds(process.pid)
        started = time.perf_counter()
        await post_all(http, args.posts)
        elapsed = time.perf_counter() - started
        cpu_ms = (harness.cpu_seconds(process.pid) - cpu_before) * 1000 / args.posts
        rss_after = process.memory_info().rss
    await asyncio.sleep(args.settle_s)
    settled = process.memory_info().rss
    parts.stop(WEBHOOK)
    return Run(setting, args.posts, elapsed, statuses, rss_before, peak, rss_after, settled, cpu_ms)


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> str:
    try:
        async with http.post(url, data=body) as response:
            return str(response.status)
    except aiohttp.ClientError as error:  # refused before the body was read, and closed
        return type(error).__name__


def mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def print_runs(runs: list[Run]) -> None:
    headers = [
        "collector", "POSTs", "s", "POSTs/s", "RSS before MiB", "peak MiB", "after MiB",
        "settled MiB", "peak - before MiB", "webhook CPU ms/POST", "answers",
    ]  # fmt: skip
    rows = [
        [
            run.setting,
            str(run.posts),
            f"{run.elapsed_s:.1f}",
            f"{run.posts / run.elapsed_s:.0f}",
            mib(run.rss_before),
            mib(run.rss_peak),
            mib(run.rss_after),
            mib(run.rss_settled),
            mib(run.rss_peak - run.rss_before),
            f"{run.cpu_ms_per_post:.2f}",
            ", ".join(f"{count} x {status}" for status, count in run.statuses.items()),
        ]
        for run in runs
    ]
    harness.print_table(headers, rows)
    for run in runs:
        verdict = harness.verdict(run.rss_peak < POD_LIMIT_MIB * 2**20)
        print(f"{run.setting}: peak within the {POD_LIMIT_MIB} Mi pod limit: {verdict}")


async def main() -> None:
    args = parse_args()
    logs = harness.logs_dir("webhook-rss")
    harness.print_preamble("webhook RSS under oversized POSTs")
    print(f"{args.posts} POSTs per setting, {args.senders} in flight; logs in {logs}")
    runs = []
    with harness.running_parts(logs) as parts:
        kafka = parts.kafka()
        await servers.ensure_topics(kafka)
        env = webhook_env(kafka, parts.mongo(), parts.redis(), "WARNING")
        for setting in args.collector:
            runs.append(await measure(setting, env, parts, args))
    print()
    print_runs(runs)


if __name__ == "__main__":
    asyncio.run(main())
