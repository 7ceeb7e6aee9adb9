"""`make run`: the embedded parts and the three services on this machine, until Ctrl-C.

Data lives under one local folder (`.devstack/` by default) so payments, rider history and the
simulator's sessions survive a restart; logs of every process go to `<folder>/logs/`. Ports are
flags; a busy port is reported before anything starts, and the addresses chosen are left in
`<folder>/stack.json` for the tools. A process that exits is restarted with backoff.

Everything listens on 127.0.0.1 unless `--host 0.0.0.0` says otherwise: the services run with
PAYMENTS_ENVIRONMENT=local, so the payments API and the notifier ask no credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from devstack import addresses, prometheus, servers
from devstack.console import ready_line, states, status_table, wait_until_ready, watch
from devstack.supervisor import Supervisor, Watched

DEV_STRIPE_KEY = "sk_test_devstack"
DEV_WEBHOOK_SECRET = "whsec_devstack_local"
LOOPBACK = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"
EXPOSED_WARNING = (
    "devstack: warning: listening on every interface (--host 0.0.0.0): anyone on this network "
    "can read rides and create Checkout sessions through the payments API and the notifier, "
    "which ask no credentials here"
)


@dataclass(frozen=True, slots=True)
class Ports:
    kafka: int = 19092
    mongodb: int = 27027
    redis: int = 16379
    stripe: int = 12111
    consumer: int = 6066
    webhook: int = 9090
    webhook_internal: int = 9092
    notifier: int = 9091
    rider_page: int = 8080
    prometheus: int = 19090


@dataclass(frozen=True, slots=True)
class StackOptions:
    folder: Path
    ports: Ports
    real_stripe_key: str | None = None
    real_webhook_secret: str | None = None
    host: str = LOOPBACK
    """Where the services, the rider page and the simulator listen (Kafka, MongoDB, Redis
    and Prometheus stay on loopback)."""

    @property
    def uses_simulator(self) -> bool:
        return self.real_stripe_key is None

    @property
    def exposed(self) -> bool:
        return self.host != LOOPBACK


class Stack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.logs = options.folder / "logs"
        self.parts: list[servers.ChildProcess] = []
        self.services: list[servers.ChildProcess] = []
        self.prometheus_page: str | None = None

    def service_environment(self) -> dict[str, str]:
        ports = self.options.ports
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports.kafka}",
            "MONGODB_URI": servers.mongodb_uri(ports.mongodb),
            "REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
            "KAFKA_SESSION_TIMEOUT_S": "6",
            "STRIPE_SECRET_KEY": self.options.real_stripe_key or DEV_STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRET": self.options.real_webhook_secret or DEV_WEBHOOK_SECRET,
            "PAYMENTS_ENVIRONMENT": "local",
            "BIND_HOST": self.options.host,
        }
        if self.options.uses_simulator:
            env["STRIPE_API_BASE"] = f"http://127.0.0.1:{ports.stripe}"
        return {**env, **self.redirects()}

    def redirects(self) -> dict[str, str]:
        """Checkout sends the rider back to the rider page, which shows the result; a choice
        of the developer's own (environment or Config.toml) wins."""
        page = f"http://127.0.0.1:{self.options.ports.rider_page}/"
        wanted = {
            ("SUCCESS_REDIRECT_URL", "successRedirectUrl"): (
                page + "?result=success&session_id={CHECKOUT_SESSION_ID}"
            ),
            ("CANCEL_REDIRECT_URL", "cancelRedirectUrl"): page + "?result=cancel",
        }
        in_file = _config_file_keys()
        return {
            variable: url
            for (variable, key), url in wanted.items()
            if variable not in os.environ and key not in in_file
        }

    def addresses(self) -> addresses.StackAddresses:
        ports = self.options.ports
        return addresses.StackAddresses(
            pid=os.getpid(),
            kafka=f"127.0.0.1:{ports.kafka}",
            notifier=f"ws://127.0.0.1:{ports.notifier}/payment-ws",
            webhook=f"http://127.0.0.1:{ports.webhook}/payment-service/webhook",
            webhook_internal=f"http://127.0.0.1:{ports.webhook_internal}",
            rider_page=f"http://127.0.0.1:{ports.rider_page}/",
            stripe=f"http://127.0.0.1:{ports.stripe}" if self.options.uses_simulator else None,
            logs=str(self.logs),
        )

    def check_ports(self) -> None:
        ports = self.options.ports
        wanted = {
            "kafka": ports.kafka,
            "mongodb": ports.mongodb,
            "redis": ports.redis,
            "consumer": ports.consumer,
            "webhook": ports.webhook,
            "webhook internal": ports.webhook_internal,
            "notifier": ports.notifier,
            "rider page": ports.rider_page,
        }
        if self.options.uses_simulator:
            wanted["stripe simulator"] = ports.stripe
        if prometheus.binary() is not None:
            wanted["prometheus"] = ports.prometheus
        busy = [
            f"{name} port {port}" for name, port in wanted.items() if servers.port_is_open(port)
        ]
        if busy:
            raise SystemExit(
                "devstack: already in use: "
                + ", ".join(busy)
                + ". Stop what holds them or choose other ports (`make run ARGS=--help`)."
            )

    async def start(self) -> None:
        self.check_ports()
        ports, folder = self.options.ports, self.options.folder
        self.parts = [
            servers.tansu(ports.kafka, self.logs),
            servers.secantus(ports.mongodb, folder / "mongodb", self.logs),
            servers.redis(ports.redis, folder / "redis", self.logs),
        ]
        if self.options.uses_simulator:
            self.parts.append(self.stripe_simulator())
        for part in self.parts:
            await asyncio.to_thread(part.start)
        await servers.ensure_topics(f"127.0.0.1:{ports.kafka}")
        self.services = self.service_processes()
        for service in self.services:
            await asyncio.to_thread(service.start, 60.0)
        await self.start_prometheus()

    def stripe_simulator(self) -> servers.ChildProcess:
        ports = self.options.ports
        return servers.python_module(
            "stripe-simulator",
            "devstack.stripe_simulator",
            ports.stripe,
            self.logs,
            env={},
            args=[
                *["--host", self.options.host, "--port", str(ports.stripe)],
                *["--webhook-url", f"http://127.0.0.1:{ports.webhook}/payment-service/webhook"],
                *["--webhook-secret", DEV_WEBHOOK_SECRET, "--api-key", DEV_STRIPE_KEY],
                *["--state-file", str(self.options.folder / "stripe-simulator" / "state.json")],
            ],
        )

    def service_processes(self) -> list[servers.ChildProcess]:
        """The three services and the rider page, not started."""
        ports, env = self.options.ports, self.service_environment()

        def service(name: str, port: int, **own: str) -> servers.ChildProcess:
            own_env = {**env, "PORT": str(port), **own}
            return servers.python_module(name, f"services.{name}", port, self.logs, own_env)

        rider_page = servers.python_module(
            "rider-page",
            "devstack.rider_page",
            ports.rider_page,
            self.logs,
            env={},
            args=[
                *["--host", self.options.host, "--port", str(ports.rider_page)],
                *["--notifier", f"ws://127.0.0.1:{ports.notifier}/payment-ws"],
                *["--payments-api", f"http://127.0.0.1:{ports.webhook_internal}/payment-service"],
            ],
        )
        return [
            service("consumer", ports.consumer),
            service("webhook", ports.webhook, INTERNAL_PORT=str(ports.webhook_internal)),
            service("notifier", ports.notifier),
            rider_page,
        ]

    async def start_prometheus(self) -> None:
        """Prometheus scraping the services with the alerts loaded, when it is installed."""
        ports = self.options.ports
        targets = {
            "consumer": f"127.0.0.1:{ports.consumer}",
            "webhook": f"127.0.0.1:{ports.webhook_internal}",
            "notifier": f"127.0.0.1:{ports.notifier}",
        }
        folder = self.options.folder / "prometheus"
        part = prometheus.prometheus(ports.prometheus, targets, folder, self.logs)
        if part is not None:
            await asyncio.to_thread(part.start)
            self.parts.append(part)
            base = f"http://127.0.0.1:{ports.prometheus}"
            self.prometheus_page = await prometheus.alerts_page(base)

    def watched(self) -> list[Watched]:
        bootstrap = f"127.0.0.1:{self.options.ports.kafka}"

        async def recreate_topics() -> None:  # tansu keeps them in memory
            await servers.ensure_topics(bootstrap)

        return [
            Watched(process, after_start=recreate_topics if process is self.parts[0] else None)
            for process in self.parts + self.services
        ]

    def stop(self) -> None:
        for process in reversed(self.parts + self.services):  # services first, then the parts
            process.stop()

    def endpoints(self) -> list[tuple[str, str, str | None]]:
        """(name, where it listens, readiness URL or None)."""
        ports = self.options.ports
        rows: list[tuple[str, str, str | None]] = [
            (
                "consumer",
                f"http://127.0.0.1:{ports.consumer}/metrics",
                f"http://127.0.0.1:{ports.consumer}/readyz",
            ),
            (
                "webhook",
                f"http://127.0.0.1:{ports.webhook}/payment-service/webhook",
                f"http://127.0.0.1:{ports.webhook_internal}/readyz",
            ),
            (
                "webhook (internal)",
                f"http://127.0.0.1:{ports.webhook_internal}/payment-service/payments/<rideId>",
                None,
            ),
            (
                "notifier",
                f"ws://127.0.0.1:{ports.notifier}/payment-ws",
                f"http://127.0.0.1:{ports.notifier}/readyz",
            ),
            ("rider-page", f"http://127.0.0.1:{ports.rider_page}/", None),
            ("kafka (tansu)", f"127.0.0.1:{ports.kafka}", None),
            ("mongodb (secantus)", servers.mongodb_uri(ports.mongodb), None),
            ("redis", f"redis://127.0.0.1:{ports.redis}/0", None),
        ]
        if self.prometheus_page is not None:
            rows.append(
                ("prometheus", self.prometheus_page, f"http://127.0.0.1:{ports.prometheus}/-/ready")
            )
        if self.options.uses_simulator:
            rows.append(
                (
                    "stripe simulator",
                    f"http://127.0.0.1:{ports.stripe}",
                    f"http://127.0.0.1:{ports.stripe}/_sim/health",
                )
            )
        return rows


async def run(options: StackOptions) -> None:
    lock = addresses.RunLock(options.folder)
    lock.acquire()
    stack = Stack(options)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    supervising: asyncio.Task[None] | None = None
    try:
        print(f"devstack: starting in {options.folder} ...", flush=True)
        if options.exposed:
            print(EXPOSED_WARNING, flush=True)
        started = time.monotonic()
        await stack.start()
        addresses.write(options.folder, stack.addresses())
        supervisor = Supervisor(stack.watched(), lambda line: print(line, flush=True))
        supervising = asyncio.create_task(supervisor.run())
        if await wait_until_ready(stack, supervisor, stopping):
            current = await asyncio.to_thread(states, stack, supervisor)
            print(status_table(stack, current), flush=True)
            print(ready_line(stack, time.monotonic() - started), flush=True)
        await watch(stack, supervisor, stopping)
    finally:
        print("devstack: stopping ...", flush=True)
        stopped = time.monotonic()
        if supervising is not None:
            supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervising
        addresses.forget(options.folder)
        await asyncio.to_thread(stack.stop)
        lock.release()
        print(f"devstack: stopped in {time.monotonic() - stopped:.1f} s", flush=True)


def _config_file_keys() -> set[str]:
    """The keys of the Config.toml the services will read (they run from the project root)."""
    root = Path(__file__).resolve().parent.parent
    path = Path(os.environ.get("PAYMENTS_CONFIG", root / "Config.toml"))
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return set()
    # Keys may also sit inside one table, as the original service kept them.
    tables = [value for value in document.values() if isinstance(value, dict)]
    return set(document).union(*tables)
