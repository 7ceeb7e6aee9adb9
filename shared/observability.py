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
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

ReadinessCheck = Callable[[], Awaitable[None]]
"""Returns when the dependency answers; raises (anything) with the reason when it does not."""

READINESS_TIMEOUT_S = 2.0
# No field of a log line is longer: an exception's message may quote what a client sent.
MAX_FIELD_CHARS = 4096

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
            "message": _bounded(record.getMessage()),
        }
        line.update({k: _bounded(v) for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            line["exception"] = _bounded(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


def _bounded(value: Any) -> Any:
    """A long string keeps its start and its end (where a traceback names the error)."""
    if not isinstance(value, str) or len(value) <= MAX_FIELD_CHARS:
        return value
    half = MAX_FIELD_CHARS // 2
    return f"{value[:half]} [... {len(value) - 2 * half} characters cut ...] {value[-half:]}"


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse as an error, with a traceback whose message
    quotes the request's bytes (99 KB in one line, seen). It is the client's fault: this makes
    it one warning naming the error, quoting nothing the client sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg, record.args = "malformed HTTP request refused", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            record.__dict__.update(error=type(error).__name__, status=error.code, peer=peer)
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # a library's warning is a JSON line too, not plain stderr
    for noisy in ("aiokafka", "faust", "mode", "pymongo", "aiohttp.access", "httpx", "stripe"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(MalformedRequestFilter())


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
