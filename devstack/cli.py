"""`python -m devstack run | ride | refund | watch`: the local stack and tools to play with it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from devstack.stack import Ports, StackOptions, run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands.add_parser("run", help="start the whole system on this machine"))
    _add_ride(commands.add_parser("ride", help="publish a ride event as the ride service does"))
    _add_refund(commands.add_parser("refund", help="request a refund as the platform does"))
    _add_watch(commands.add_parser("watch", help="print a user's notifications as they arrive"))
    args = parser.parse_args(argv)
    try:
        asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        pass


def _add_run(parser: argparse.ArgumentParser) -> None:
    defaults = Ports()
    parser.add_argument(
        "--folder",
        type=Path,
        default=Path(".devstack"),
        help="data and logs folder (default: %(default)s)",
    )
    for name in Ports.__dataclass_fields__:
        flag = name.replace("_", "-")
        parser.add_argument(
            f"--{flag}-port",
            type=int,
            default=getattr(defaults, name),
            help=f"{flag} port (default: %(default)s)",
        )
    parser.add_argument(
        "--no-live", action="store_true", help="print the status table now and then"
    )
    parser.set_defaults(handler=_run)


async def _run(args: argparse.Namespace) -> None:
    ports = Ports(**{name: getattr(args, f"{name}_port") for name in Ports.__dataclass_fields__})
    real_key = os.environ.get("STRIPE_SECRET_KEY")
    options = StackOptions(
        folder=args.folder.resolve(),
        ports=ports,
        real_stripe_key=real_key or None,
        real_webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET") if real_key else None,
    )
    await run(options, live=not args.no_live)


def _add_ride(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the rider's userId")
    parser.add_argument("--fare", required=True, help="fare in major units, e.g. 25.50")
    parser.add_argument("--ride", help="rideId (default: a new random one)")
    parser.add_argument(
        "--kafka",
        default=f"127.0.0.1:{Ports().kafka}",
        help="bootstrap servers (default: %(default)s)",
    )
    parser.set_defaults(handler=_ride)


async def _ride(args: argparse.Namespace) -> None:
    ride_id = args.ride or f"ride-{uuid.uuid4().hex[:8]}"
    event = {"rideId": ride_id, "userId": args.user, "fare": args.fare}
    producer = AIOKafkaProducer(bootstrap_servers=args.kafka, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            "payment-events", json.dumps(event).encode(), key=args.user.encode()
        )
    finally:
        await producer.stop()
    print(json.dumps(event))


def _add_refund(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ride", required=True, help="the paid ride's rideId")
    parser.add_argument("--amount", help="major units, e.g. 5.00 (default: all that remains)")
    parser.add_argument("--refund", help="refundId, the idempotency key (default: a new one)")
    parser.add_argument(
        "--reason", choices=["requested_by_customer", "duplicate", "fraudulent"], default=None
    )
    parser.add_argument(
        "--kafka",
        default=f"127.0.0.1:{Ports().kafka}",
        help="bootstrap servers (default: %(default)s)",
    )
    parser.set_defaults(handler=_refund)


async def _refund(args: argparse.Namespace) -> None:
    request = {"refundId": args.refund or f"rf-{uuid.uuid4().hex[:8]}", "rideId": args.ride}
    if args.amount:
        request["amount"] = args.amount
    if args.reason:
        request["reason"] = args.reason
    producer = AIOKafkaProducer(bootstrap_servers=args.kafka, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            "refund-requests", json.dumps(request).encode(), key=args.ride.encode()
        )
    finally:
        await producer.stop()
    print(json.dumps(request))


def _add_watch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the rider's userId")
    parser.add_argument(
        "--url",
        default=f"ws://127.0.0.1:{Ports().notifier}/payment-ws",
        help="notifier WebSocket URL (default: %(default)s)",
    )
    parser.add_argument("--token", help="JWT, when the notifier requires one")
    parser.set_defaults(handler=_watch)


async def _watch(args: argparse.Namespace) -> None:
    params = {"userId": args.user, **({"token": args.token} if args.token else {})}
    last_id: str | None = None
    async with aiohttp.ClientSession() as session:
        while True:
            query = {**params, **({"lastId": last_id} if last_id else {})}
            try:
                async with session.ws_connect(args.url, params=query, heartbeat=30) as socket:
                    async for frame in socket:
                        if frame.type is not aiohttp.WSMsgType.TEXT:
                            break
                        message = json.loads(frame.data)
                        last_id = message.get("id", last_id)
                        print(json.dumps(message), flush=True)
            except aiohttp.ClientError as error:
                print(
                    json.dumps({"type": "watch", "message": f"disconnected: {error}"}), flush=True
                )
            await asyncio.sleep(1)
