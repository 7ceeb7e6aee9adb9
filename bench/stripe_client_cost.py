"""CPU per Checkout Session create in this process: the Stripe SDK over its HTTPX client, over
its aiohttp client, and through shared/stripe_gateway.py as configured, against the Stripe
simulator with --latency-ms per call and --concurrency calls in flight.

It isolates the largest cost found in the consumer (docs/benchmarks.md). Whether `sniffio` is
importable is printed: without it httpcore retries a failing import on every pool operation.

    .venv/bin/python bench/stripe_client_cost.py [--calls 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import stripe

from bench import harness
from shared.stripe_gateway import CheckoutRequest, CheckoutSession, StripeGateway

Call = Callable[[int], Awaitable[None]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="measured calls per client")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight")
    parser.add_argument("--latency-ms", type=int, default=100, help="simulator latency")
    parser.add_argument("--warmup", type=int, default=50, help="calls before measuring")
    return parser.parse_args()


def checkout(tag: str, index: int) -> CheckoutRequest:
    ride = f"{tag}-{index:06d}"
    return CheckoutRequest(ride, f"user-{ride}", 2550, "usd", "http://ok.test", "http://no.test")


Maker = Callable[[str], tuple[Call, Callable[[], Awaitable[None]]]]


def gateway_client(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The project's gateway, with whichever HTTP client it is configured with."""
    gateway = StripeGateway(harness.STRIPE_KEY, url)
    tag = uuid.uuid4().hex[:8]

    async def call(index: int) -> None:
        await gateway.create_checkout_session(checkout(tag, index))

    return call, gateway.close


def sdk_client(make_http: Callable[[], stripe.HTTPClient]) -> Maker:
    """The gateway's request through the SDK over the given HTTP client."""

    def make(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
        http = make_http()
        client = stripe.StripeClient(
            harness.STRIPE_KEY, base_addresses={"api": url}, http_client=http, max_network_retries=0
        )
        tag = uuid.uuid4().hex[:8]

        async def call(index: int) -> None:
            request = checkout(tag, index)
            session = await client.v1.checkout.sessions.create_async(
                params=request.params(),  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            )
            CheckoutSession.from_stripe(session)

        async def close() -> None:
            await http.close_async()  # type: ignore[no-untyped-call]

        return call, close

    return make


async def measure(
    name: str, make: Maker, url: str, simulator_pid: int, args: argparse.Namespace,
) -> list[str]:  # fmt: skip
    call, close = make(url)
    try:
        await harness.run_pool(args.warmup, args.concurrency, lambda i: call(10**6 + i))
        pids = {harness.BENCH: os.getpid(), "stripe-sim": simulator_pid}
        before = harness.sample(pids)
        elapsed = await harness.run_pool(args.calls, args.concurrency, call)
        cpu = harness.usage(before, harness.sample(pids))
    finally:
        await close()
    return [
        name,
        f"{args.calls / elapsed:.0f}",
        f"{cpu.ms_per(harness.BENCH, args.calls):.2f}",
        f"{cpu.ms_per('stripe-sim', args.calls):.2f}",
    ]


async def main() -> None:
    args = parse_args()
    harness.print_preamble("Stripe SDK client CPU per Checkout Session create")
    sniffio = importlib.util.find_spec("sniffio") is not None
    print(
        f"{args.concurrency} in flight, {args.latency_ms} ms latency; sniffio importable: {sniffio}"
    )
    with harness.running_parts(harness.logs_dir("stripe")) as parts:
        url = parts.stripe(args.latency_ms)
        simulator = parts.pids()["stripe-sim"]
        clients: list[tuple[str, Maker]] = [
            ("stripe.HTTPXClient", sdk_client(lambda: stripe.HTTPXClient(timeout=20))),
            ("stripe.AIOHTTPClient", sdk_client(lambda: stripe.AIOHTTPClient(timeout=20))),
            ("StripeGateway (as configured)", gateway_client),
        ]
        rows = [await measure(name, make, url, simulator, args) for name, make in clients]
    print()
    harness.print_table(["client", "calls/s", "client CPU ms/call", "simulator ms/call"], rows)


if __name__ == "__main__":
    asyncio.run(main())
