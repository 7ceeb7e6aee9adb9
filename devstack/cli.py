"""`python -m devstack run | ride | refund | watch | outstanding | dlq | reset`: the local
stack and the tools to play with it. The tools find the stack `make run` started through
`<folder>/stack.json`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from devstack import addresses, servers
from devstack.stack import Ports, StackOptions, run
from shared.model import InvalidRideEvent, parse_ride_event

NOT_REACHABLE = "is `make run` still running? (or pass --folder, or the address as a flag)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands.add_parser("run", help="start the whole system on this machine"))
    _add_ride(commands.add_parser("ride", help="publish a ride event as the ride service does"))
    _add_refund(commands.add_parser("refund", help="request a refund as the platform does"))
    _add_watch(commands.add_parser("watch", help="print a user's notifications as they arrive"))
    _add_outstanding(commands.add_parser("outstanding", help="list what a user still owes"))
    _add_dlq(commands.add_parser("dlq", help="list or replay dead letters of the running stack"))
    _add_reset(commands.add_parser("reset", help="delete the stack's data (not the virtualenv)"))
    args = parser.parse_args(argv)
    if args.command != "run":
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # our one-line hints say it
    try:
        if asyncio.iscoroutinefunction(args.handler):
            asyncio.run(args.handler(args))
        else:
            args.handler(args)
    except KeyboardInterrupt:
        pass


def _add_folder(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--folder",
        type=Path,
        default=addresses.DEFAULT_FOLDER,
        help="the stack's data and logs folder (default: %(default)s)",
    )


def _add_run(parser: argparse.ArgumentParser) -> None:
    defaults = Ports()
    _add_folder(parser)
    for name in Ports.__dataclass_fields__:
        flag = name.replace("_", "-")
        parser.add_argument(
            f"--{flag}-port",
            type=int,
            default=getattr(defaults, name),
            help=f"{flag} port (default: %(default)s)",
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
    try:
        await run(options)
    except (servers.MissingBinary, RuntimeError, TimeoutError) as error:
        raise SystemExit(f"devstack: could not start: {error}") from None


def _add_ride(parser: argparse.ArgumentParser) -> None:
    _add_folder(parser)
    parser.add_argument("--user", required=True, help="the rider's userId")
    parser.add_argument("--fare", required=True, help="fare in major units, e.g. 25.50")
    parser.add_argument("--ride", help="rideId (default: a new random one)")
    parser.add_argument("--kafka", help="bootstrap servers (default: the running stack's)")
    parser.set_defaults(handler=_ride)


async def _ride(args: argparse.Namespace) -> None:
    bootstrap = args.kafka or addresses.read(args.folder).kafka
    ride_id = args.ride or f"ride-{uuid.uuid4().hex[:8]}"
    event = {"rideId": ride_id, "userId": args.user, "fare": args.fare}
    value = json.dumps(event).encode()
    warning = dead_letter_warning(value)
    await _publish(bootstrap, "payment-events", value, key=args.user.encode())
    print(json.dumps(event))
    if warning:
        print(warning, file=sys.stderr)


def dead_letter_warning(value: bytes) -> str | None:
    """What the consumer will make of this event, when it is not a payment."""
    try:
        parse_ride_event(value)
    except InvalidRideEvent as error:
        return (
            f"devstack: published, but the consumer will dead-letter it: {error.reason}. "
            "The rider gets nothing; see it with `make dlq`."
        )
    return None


def _add_refund(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ride", required=True, help="the paid ride's rideId")
    parser.add_argument("--amount", help="major units, e.g. 5.00 (default: all that remains)")
    parser.add_argument("--refund", help="refundId, the idempotency key (default: a new one)")
    parser.add_argument(
        "--reason", choices=["requested_by_customer", "duplicate", "fraudulent"], default=None
    )
    parser.add_argument("--kafka", help="bootstrap servers (default: the running stack's)")
    _add_folder(parser)
    parser.set_defaults(handler=_refund)


async def _refund(args: argparse.Namespace) -> None:
    request = {"refundId": args.refund or f"rf-{uuid.uuid4().hex[:8]}", "rideId": args.ride}
    if args.amount:
        request["amount"] = args.amount
    if args.reason:
        request["reason"] = args.reason
    bootstrap = args.kafka or addresses.read(args.folder).kafka
    await _publish(bootstrap, "refund-requests", json.dumps(request).encode(), args.ride.encode())
    print(json.dumps(request))


async def _publish(bootstrap: str, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
    except KafkaConnectionError:
        await producer.stop()
        raise SystemExit(f"devstack: cannot reach Kafka at {bootstrap}; {NOT_REACHABLE}") from None
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _add_watch(parser: argparse.ArgumentParser) -> None:
    _add_folder(parser)
    parser.add_argument("--user", required=True, help="the rider's userId")
    parser.add_argument("--url", help="notifier WebSocket URL (default: the running stack's)")
    parser.add_argument("--token", help="JWT, when the notifier requires one")
    parser.set_defaults(handler=_watch)


async def _watch(args: argparse.Namespace) -> None:
    url = args.url or addresses.read(args.folder).notifier
    params = {"userId": args.user, **({"token": args.token} if args.token else {})}
    last_id: str | None = None
    failures = 0
    async with aiohttp.ClientSession() as session:
        while True:
            query = {**params, **({"lastId": last_id} if last_id else {})}
            try:
                async with session.ws_connect(url, params=query, heartbeat=30) as socket:
                    failures = 0
                    async for frame in socket:
                        if frame.type is not aiohttp.WSMsgType.TEXT:
                            break
                        message = _parsed(frame.data)
                        new_id = message.get("id")
                        last_id = new_id if isinstance(new_id, str) else last_id
                        print(json.dumps(message), flush=True)
                    if socket.close_code == 1008:
                        raise SystemExit("devstack: the notifier refused this user or token")
                problem = f"connection closed ({socket.close_code})"
            except aiohttp.ClientError as error:
                if not args.url:
                    addresses.read(args.folder)  # the stack stopped: say so and stop
                problem = f"cannot reach the notifier at {url}: {error}"
            delay = min(30.0, 2.0**failures) * random.uniform(0.5, 1.0)
            failures += 1
            print(f"devstack: {problem}; retrying in {delay:.1f} s", file=sys.stderr, flush=True)
            await asyncio.sleep(delay)


def _parsed(data: str) -> dict[str, object]:
    try:
        message = json.loads(data)
    except ValueError:
        return {"type": "unparsable", "data": data[:200]}
    return message if isinstance(message, dict) else {"type": "unexpected", "data": message}


def _add_dlq(parser: argparse.ArgumentParser) -> None:
    _add_folder(parser)
    parser.add_argument(
        "dlq_args",
        nargs=argparse.REMAINDER,
        metavar="list | replay ...",
        help="the arguments of `python -m services.consumer.dlq` (default: list)",
    )
    parser.set_defaults(handler=_dlq)


def _dlq(args: argparse.Namespace) -> None:
    from services.consumer import dlq

    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = addresses.read(args.folder).kafka
    dlq.main(args.dlq_args or ["list"])


def _add_reset(parser: argparse.ArgumentParser) -> None:
    _add_folder(parser)
    parser.set_defaults(handler=_reset)


def _reset(args: argparse.Namespace) -> None:
    folder: Path = args.folder
    if addresses.is_running(folder):
        raise SystemExit(f"devstack: a stack is running in {folder}; stop it (Ctrl-C) first")
    if not folder.exists():
        print(f"devstack: {folder} holds nothing to delete")
        return
    shutil.rmtree(folder)
    print(f"devstack: deleted {folder} (payments, rider history, simulator state, logs)")


def _add_outstanding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the rider's userId")
    parser.add_argument("--api", help="the payments API's base URL (default: the running stack's)")
    _add_folder(parser)
    parser.add_argument("--token", help="bearer token, when INTERNAL_API_TOKENS is set")
    parser.set_defaults(handler=_outstanding)


async def _outstanding(args: argparse.Namespace) -> None:
    """One line per unpaid ride, oldest first, then the totals per currency."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    api = args.api or f"{addresses.read(args.folder).webhook_internal}/payment-service"
    url = f"{api}/users/{args.user}/outstanding"
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
