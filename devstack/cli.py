"""`python -m devstack run | ride | watch | outstanding`: the local stack and tools to play
with it."""

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
    _add_watch(commands.add_parser("watch", help="print a user's notifications as they arrive"))
    _add_outstanding(commands.add_parser("outstanding", help="list what a user still owes"))
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


def _add_outstanding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the rider's userId")
    parser.add_argument(
        "--api",
        default=f"http://127.0.0.1:{Ports().webhook_internal}/payment-service",
        help="the payments API (default: %(default)s)",
    )
    parser.add_argument("--token", help="bearer token, when INTERNAL_API_TOKENS is set")
    parser.set_defaults(handler=_outstanding)


async def _outstanding(args: argparse.Namespace) -> None:
    """One line per unpaid ride, oldest first, then the totals per currency."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = f"{args.api}/users/{args.user}/outstanding"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        body = await response.json(content_type=None)
    if response.status != 200:
        raise SystemExit(f"payments API answered {response.status}: {body}")
    for ride in body["rides"]:
        link = ride["paymentUrl"] or "(no payable link: ask for a new one)"
        print(
            f"{ride['createdAt']}  {ride['rideId']}  {ride['amount']} {ride['currency']}"
            f"  {ride['status']}  attempt {ride['attempt']}  {link}"
        )
    totals = ", ".join(f"{amount} {currency}" for currency, amount in body["total"].items())
    print(f"total owed (minor units): {totals or 'nothing'}")
