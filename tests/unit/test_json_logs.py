"""A service's log is JSON lines, a library's warning included."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from shared.observability import configure_logging


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """What a service's logging writes (to stdout in the service)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("consumer")
    written = io.StringIO()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    yield written
    logging.captureWarnings(False)
    root.handlers[:], root.level = handlers, level


def test_a_library_warning_is_one_json_line(service_log: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a synchronous Retry was passed", UserWarning, stacklevel=1)
    [line] = service_log.getvalue().splitlines()
    logged = json.loads(line)
    assert (logged["level"], logged["service"]) == ("warning", "consumer")
    assert "a synchronous Retry was passed" in logged["message"]
