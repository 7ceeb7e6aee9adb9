"""Client text frames, read defensively: whatever a client sends, the answer is a clear problem.

A frame is at most the socket's size limit (aiohttp closes bigger ones with 1009). Within it,
nesting is bounded before parsing, since the JSON parser recurses once per level and a frame
of brackets would otherwise raise RecursionError; the check takes time in proportion to the
frame whatever its shape (shared/json_nesting.py). Numbers longer than Python reads are
refused by the parser as invalid JSON.
"""

from __future__ import annotations

import json
from typing import Any

from shared.json_nesting import nested_deeper_than

MAX_DEPTH = 16
"""The contract's messages are flat objects; anything nested deeper is not one of them."""


class FrameProblem(ValueError):
    """What is wrong with a frame, in words fit for the client."""


def parse_frame(text: str) -> dict[str, Any]:
    """The JSON object a client sent; raises FrameProblem saying what is wrong."""
    if nested_deeper_than(text, MAX_DEPTH):
        raise FrameProblem(f"message is nested too deeply (at most {MAX_DEPTH} levels)")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameProblem("message is not valid JSON") from None
    if not isinstance(payload, dict):
        raise FrameProblem("message must be a JSON object")
    return payload
