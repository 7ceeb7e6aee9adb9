"""What reads untrusted JSON before the parser does (the webhook's signed bodies, the notifier's
socket frames, the consumer's ride events) takes time in proportion to the input, whatever its
shape: 4 times the input costs about 4 times the CPU, never 16.

Not a timed test: each case compares its own CPU time at two sizes, each the least of several
runs of enough calls to last 20 ms, so a busy machine slows both sides alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from services.notifier.frames import FrameProblem, parse_frame
from services.webhook.events import MalformedEvent, StripeEvent
from shared.model import InvalidRideEvent, decode_json_object

# Linear work grows 4 times for 4 times the input and quadratic work 16 times; between them,
# room for a machine busy with other work (8 was once exceeded by a linear case there).
MAX_GROWTH = 10.0
MEASURED_S = 0.02

Shape = Callable[[int], str]

SHAPES: dict[str, Shape] = {
    "unterminated-escaped-quotes": lambda n: '{"id": "' + '\\"' * n,
    "escaped-quotes-in-strings": lambda n: "[" + '"\\"",' * n + '""]',
    "empty-arrays": lambda n: "[]" * n,
    "arrays-in-arrays": lambda n: "[[]]" * (n // 2),
    "unclosed-then-empty-arrays": lambda n: "[" * 14 + "[]" * n,
    "unclosed-then-nested": lambda n: "[" * 12 + "[[][[]]]" * (n // 4),
    "closers": lambda n: "]" * n + "[" * 10,
    "unterminated-backslashes": lambda n: '"' + "\\" * n,
    "ordinary-objects": lambda n: "[" + '{"a": [1, {"b": "x[y]"}]},' * (n // 10) + "{}]",
}


def cpu_per_call(work: Callable[[], object]) -> float:
    """CPU seconds per call of `work`: the least of five runs of enough calls to last
    MEASURED_S."""
    calls = 1
    while True:
        runs = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(calls):
                work()
            runs.append(time.process_time() - started)
        if min(runs) >= MEASURED_S:
            return min(runs) / calls
        calls *= 4


def growth(read: Callable[[str], object], shape: Shape, n: int) -> float:
    """How much more CPU `read` takes on the shape at 4n than at n."""

    def reading(size: int) -> Callable[[], object]:
        text = shape(size)
        return lambda: read(text)

    return cpu_per_call(reading(4 * n)) / cpu_per_call(reading(n))


def webhook_body(text: str) -> object:
    try:
        return StripeEvent.from_body(text.encode())
    except MalformedEvent as refused:
        return refused


def notifier_frame(text: str) -> object:
    try:
        return parse_frame(text)
    except FrameProblem as refused:
        return refused


def ride_event(text: str) -> object:
    try:
        return decode_json_object(text.encode())
    except InvalidRideEvent as refused:
        return refused


@pytest.mark.parametrize("shape", SHAPES)
def test_the_webhooks_pre_check_is_linear(shape: str) -> None:
    assert growth(webhook_body, SHAPES[shape], 8_000) < MAX_GROWTH


@pytest.mark.parametrize("shape", SHAPES)
def test_the_notifiers_frame_check_is_linear(shape: str) -> None:
    assert growth(notifier_frame, SHAPES[shape], 8_000) < MAX_GROWTH


@pytest.mark.parametrize("shape", SHAPES)
def test_the_consumers_event_check_is_linear(shape: str) -> None:
    # Ride events are at most 64 KiB: 4n stays under it.
    assert growth(ride_event, SHAPES[shape], 3_000) < MAX_GROWTH


def test_a_frame_of_empty_arrays_costs_less_than_parsing_a_frame_as_large() -> None:
    """32,700 `[]` (64 KiB, the finding: 4.4 ms a frame, 20 times a normal one, counting
    characters in Python): checking them costs less than the JSON parser takes to read a frame
    as large holding an array of numbers (before: about twice as much)."""
    hostile = "[]" * 32_700
    as_large = "[" + "1," * 32_699 + "1]"
    parsing = cpu_per_call(lambda: json.loads(as_large))
    assert cpu_per_call(lambda: notifier_frame(hostile)) < parsing
