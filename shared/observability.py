"""JSON logs, Prometheus metrics and the health routes every service mounts.

`/healthz` says the process and its loop work; `/readyz` runs each named readiness check and
answers 503 naming the ones that failed; `/metrics` serves the process's Prometheus registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadinessCheck = Callable[[], Awaitable[None]]
"""Returns when the dependency answers; raises (anything) with the reason when it does not."""

READINESS_TIMEOUT_S = 2.0

# LogRecord attributes that are not the caller's `extra` fields.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={...}` fields (such as rideId) become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "pymongo", "aiohttp.access", "httpx", "stripe"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


async def readiness_failures(checks: Mapping[str, ReadinessCheck]) -> dict[str, str]:
    """Run every check concurrently; map each failed one to its reason."""

    async def run(check: ReadinessCheck) -> str | None:
        try:
            await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {READINESS_TIMEOUT_S} s"
        except Exception as error:
            return str(error) or type(error).__name__
        return None

    names = list(checks)
    results = await asyncio.gather(*(run(checks[name]) for name in names))
    return {name: reason for name, reason in zip(names, results, strict=True) if reason is not None}


def liveness_route() -> web.RouteDef:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    return web.get("/healthz", healthz)


def health_routes(checks: Mapping[str, ReadinessCheck]) -> list[web.RouteDef]:
    async def readyz(_: web.Request) -> web.Response:
        failed = await readiness_failures(checks)
        if failed:
            return web.json_response({"status": "unavailable", "failed": failed}, status=503)
        return web.json_response({"status": "ready", "checks": sorted(checks)})

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [liveness_route(), web.get("/readyz", readyz), web.get("/metrics", metrics)]


def flag_check(name: str, is_set: Callable[[], bool]) -> ReadinessCheck:
    """A readiness check for an in-process condition, such as a background loop running."""

    async def check() -> None:
        if not is_set():
            raise RuntimeError(f"{name} is not running")

    return check
