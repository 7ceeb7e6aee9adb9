"""Decoding of Stripe's bracketed form encoding into nested dicts and lists.

The SDK sends `line_items[0][price_data][unit_amount]=2550`; this turns it back into
`{"line_items": [{"price_data": {"unit_amount": "2550"}}]}`. Values stay strings: the
endpoint that reads them knows which ones are numbers.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

# Children of these keys are free-form maps even when their keys look like indexes.
_MAP_KEYS = frozenset({"metadata"})


class FormError(ValueError):
    """The body cannot be a Stripe request: the message names the offending key."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def decode_form(body: str) -> dict[str, Any]:
    """Decode an `application/x-www-form-urlencoded` body or query string."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        _assign(root, _split_key(key), value, key)
    return {k: _listify(v, k) for k, v in root.items()}


def _split_key(key: str) -> list[str]:
    match = _KEY.match(key)
    if match is None:
        raise FormError(f"Invalid parameter name: {key}", key)
    return [match.group(1), *_SEGMENT.findall(match.group(2))]


def _assign(node: dict[str, Any], path: list[str], value: str, key: str) -> None:
    for segment in path[:-1]:
        # `a[]` (old-style arrays) means "next index".
        child = node.setdefault(segment or str(len(node)), {})
        if not isinstance(child, dict):
            raise FormError(f"Invalid parameter: {key} mixes a value and a hash", key)
        node = child
    last = path[-1] or str(len(node))
    if isinstance(node.get(last), dict):
        raise FormError(f"Invalid parameter: {key} mixes a value and a hash", key)
    node[last] = value


def _listify(value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        return value
    if key not in _MAP_KEYS and value and all(k.isdigit() for k in value):
        return [_listify(value[k], k) for k in sorted(value, key=int)]
    return {k: _listify(v, k) for k, v in value.items()}
