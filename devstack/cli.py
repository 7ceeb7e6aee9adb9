"""`python -m devstack run | ride | refund | watch | outstanding | dlq | reset`: the local
stack and the tools to play with it, each behind its `make` target (see the README). The tools
find the stack `make run` started through `<folder>/stack.json`."""

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

from devstack import addresses, dead_letters, refunds, servers
from devstack.payments_api import PaymentsApi, PaymentsApiError
from devstack.stack import EVERY_INTERFACE, LOOPBACK, Ports, StackOptions, run
from shared.model import (
    InvalidRideEvent,
    chargeable_amount,
    identifier_problem,
    parse_ride_event,
)
from shared.settings import ConfigError, load_settings

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
    parser.add_argument(
        "--host",
        choices=[LOOPBACK, EVERY_INTERFACE],
        default=LOOPBACK,
        help="where the services, the rider page and the simulator listen (default: "
        "%(default)s, this machine only); 0.0.0.0 is every interface, open to your network "
        "with no credentials asked",
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
        host=args.host,
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
    warning = dead_letter_warning(value, _payment_currency())
    await _publish(bootstrap, "payment-events", value, key=args.user.encode())
    print(json.dumps(event))
    if warning:
        print(warning, file=sys.stderr)


def dead_letter_warning(value: bytes, currency: str) -> str | None:
    """What the consumer will make of this event, when it is not a payment: its own rules,
    from parsing to Stripe's minimum charge in `currency`."""
    try:
        chargeable_amount(parse_ride_event(value).fare, currency)
    except InvalidRideEvent as error:
        return (
            f"devstack: published, but the consumer will dead-letter it: {error.reason}. "
            "The rider gets nothing; see it with `make dlq`."
        )
    return None


def _payment_currency() -> str:
    """The currency the stack's consumer charges in: its settings, read as it reads them
    (the environment, then Config.toml)."""
    try:
        return load_settings().payment_currency
    except ConfigError:
        return "usd"  # the stack would not start either; the fare is checked as by default


def _add_refund(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ride", required=True, help="the paid ride's rideId")
    parser.add_argument("--amount", help="major units, e.g. 5.00 (default: all that remains)")
    parser.add_argument("--refund", help="refundId, the idempotency key (default: a new one)")
    parser.add_argument(
        "--reason", choices=["requested_by_customer", "duplicate", "fraudulent"], default=None
    )
    parser.add_argument("--kafka", help="bootstrap servers (default: the running stack's)")
    _add_api(parser)
    _add_folder(parser)
    parser.set_defaults(handler=_refund)


async def _refund(args: argparse.Namespace) -> None:
    """Warn of a refusal before sending; after, wait for what became of the request: exit 1
    when it was refused."""
    request = {"refundId": args.refund or f"rf-{uuid.uuid4().hex[:8]}", "rideId": args.ride}
    if args.amount:
        request["amount"] = args.amount
    if args.reason:
        request["reason"] = args.reason
    value = json.dumps(request).encode()
    bootstrap = args.kafka or addresses.read(args.folder).kafka
    async with aiohttp.ClientSession() as session:
        api = PaymentsApi(session, _api_url(args), args.token)
        warning = await _refusal_warning(api, value)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        await _publish(bootstrap, "refund-requests", value, args.ride.encode())
        print(json.dumps(request), flush=True)
        result = await refunds.outcome(api, bootstrap, request, value)
    if result.refused:
        raise SystemExit(result.line)
    print(result.line)


async def _refusal_warning(api: PaymentsApi, value: bytes) -> str | None:
    """A line on what the consumer will refuse, or on why that could not be checked."""
    try:
        reason = await refunds.refusal(api, value)
    except PaymentsApiError as error:
        return f"devstack: could not check the ride before sending: {error}"
    if reason is None:
        return None
    return (
        f"devstack: the consumer will refuse this refund: {reason}. "
        "Sending it all the same, to see where refusals go."
    )


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
    _require_rider(args.user, "watch")
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
    parser.add_argument(
        "action", nargs="?", choices=["list", "replay"], default="list", help="(default: list)"
    )
    parser.add_argument(
        "--topic",
        help="rides (payment-events-dlq) or refunds (refund-requests-dlq); default: both",
    )
    parser.add_argument(
        "--ref",
        action="append",
        default=[],
        help="replay: a dead letter's ref as list shows it (refunds:0:3; a plain 0:3 when only"
        " one topic holds it); repeatable",
    )
    parser.add_argument("--all", action="store_true", help="replay: every dead letter")
    parser.add_argument("--reason", default="", help="replay: only those whose reason has this")
    _add_folder(parser)
    parser.set_defaults(handler=_dlq)


async def _dlq(args: argparse.Namespace) -> None:
    topics = dead_letters.topics_named(args.topic)
    refs = dead_letters.parse_refs(args.ref, topics)
    if args.action == "replay" and not (refs or args.all):
        raise SystemExit(
            "devstack: name the dead letters to replay: REF=P:O as `make dlq` shows it, or REF=all"
        )
    bootstrap = addresses.read(args.folder).kafka
    try:
        letters = await dead_letters.read(bootstrap, topics)
        if args.action == "list":
            dead_letters.print_letters(letters)
            return
        await dead_letters.replay(bootstrap, letters, refs, every=args.all, reason=args.reason)
    except KafkaConnectionError:
        raise SystemExit(f"devstack: cannot reach Kafka at {bootstrap}; {NOT_REACHABLE}") from None


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
    _add_api(parser)
    _add_folder(parser)
    parser.set_defaults(handler=_outstanding)


def _add_api(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", help="the payments API's base URL (default: the running stack's)")
    parser.add_argument("--token", help="bearer token, when INTERNAL_API_TOKENS is set")


def _api_url(args: argparse.Namespace) -> str:
    return args.api or f"{addresses.read(args.folder).webhook_internal}/payment-service"


def _require_rider(user: str, target: str) -> None:
    problem = identifier_problem(user, "userId")
    if problem is not None:
        raise SystemExit(f"devstack: {problem}: name the rider, e.g. `make {target} RIDER=u1`")


async def _outstanding(args: argparse.Namespace) -> None:
    """One line per unpaid ride, oldest first, then the totals per currency."""
    _require_rider(args.user, "outstanding")
    async with aiohttp.ClientSession() as session:
        try:
            body = await PaymentsApi(session, _api_url(args), args.token).outstanding(args.user)
        except PaymentsApiError as error:
            raise SystemExit(f"devstack: {error}") from None
    for ride in body["rides"]:
        link = ride["paymentUrl"] or "(no payable link: ask for a new one)"
        print(
            f"{ride['createdAt']}  {ride['rideId']}  {ride['amount']} {ride['currency']}"
            f"  {ride['status']}  attempt {ride['attempt']}  {link}"
        )
    totals = ", ".join(f"{amount} {currency}" for currency, amount in body["total"].items())
    print(f"total owed (minor units): {totals or 'nothing'}")
