"""Breaking changes between two versions of a contract document (AsyncAPI or OpenAPI).

Every schema the system reads (input: topics it receives, a client's socket messages, request
bodies and parameters) or writes (output: topics it sends to, its socket messages, answers) is
compared with its released version. Breaking, for the teams that build against it:
- a channel, message, operation or documented answer removed;
- a field removed; a field retyped (input: a type no longer accepted; output: a type readers
  never met); a `const` changed; an enum value removed (a status renamed is one);
- input: a field newly required, or unknown fields newly refused;
- output: a field no longer always sent.
Adding optional input fields, output fields, enum values, channels or answers is not breaking.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from tests.contracts import Document, follow

Direction = Literal["input", "output"]
Shapes = dict[str, tuple[Any, Direction]]


def breaking_changes(released: Document, current: Document) -> list[str]:
    """What in `current` breaks the users of `released`, one line each (empty: nothing)."""
    before, after = shapes(released), shapes(current)
    problems: list[str] = []
    for name, (schema, direction) in before.items():
        if name not in after:
            problems.append(f"{name}: removed")
            continue
        comparison = _Comparison(released, current, direction)
        problems += comparison.of(schema, after[name][0], name)
    return problems


def shapes(document: Document) -> Shapes:
    """Every schema of the document that someone reads or writes, by a stable name."""
    found = _asyncapi_shapes(document) if "asyncapi" in document else _openapi_shapes(document)
    return dict(found)


def _asyncapi_shapes(document: Document) -> Iterator[tuple[str, tuple[Any, Direction]]]:
    default_type = document.get("defaultContentType", "application/json")
    for operation in document.get("operations", {}).values():
        direction: Direction = "output" if operation["action"] == "send" else "input"
        _, channel = follow(document, operation["channel"])
        for reference in operation.get("messages", []):
            _, message = follow(document, reference)
            name = f"{channel['address']} {message.get('name', '?')}"
            yield f"{name} ({direction})", ({}, direction)
            if message.get("contentType", default_type) == "application/json":
                yield f"{name} payload", (message.get("payload", {}), direction)
            if "headers" in message:
                yield f"{name} headers", (message["headers"], direction)


def _openapi_shapes(document: Document) -> Iterator[tuple[str, tuple[Any, Direction]]]:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in ("servers", "parameters", "summary", "description"):
                continue
            name = f"{method.upper()} {path}"
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            yield f"{name} parameters", (_as_schema(document, parameters), "input")
            _, body = follow(document, operation.get("requestBody", {}))
            if "application/json" in body.get("content", {}):
                yield f"{name} body", (body["content"]["application/json"]["schema"], "input")
            for status, response in operation.get("responses", {}).items():
                _, answer = follow(document, response)
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                yield f"{name} {status}", (schema, "output")


def _as_schema(document: Document, parameters: list[Any]) -> dict[str, Any]:
    """Parameters as one object schema (`in:name` properties), to compare like a body."""
    resolved = [follow(document, parameter)[1] for parameter in parameters]
    return {
        "type": "object",
        "properties": {f"{p['in']}:{p['name']}": p.get("schema", {}) for p in resolved},
        "required": [f"{p['in']}:{p['name']}" for p in resolved if p.get("required")],
    }


class _Comparison:
    def __init__(self, released: Document, current: Document, direction: Direction) -> None:
        self._released = released
        self._current = current
        self._direction = direction

    def of(self, before: Any, after: Any, where: str) -> list[str]:
        _, old = follow(self._released, before)
        _, new = follow(self._current, after)
        if not isinstance(old, dict) or not isinstance(new, dict):
            return []
        return [
            *self._types(old, new, where),
            *self._constants(old, new, where),
            *self._required(old, new, where),
            *self._fields(old, new, where),
            *self._alternatives(old, new, where),
        ]

    def _types(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
        before, after = _types(old), _types(new)
        if not before or not after:
            return []
        unsafe = after - before if self._direction == "output" else before - after
        return [f"{where}: retyped from {sorted(before)} to {sorted(after)}"] if unsafe else []

    def _constants(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
        problems = []
        if "const" in old and new.get("const", old["const"]) != old["const"]:
            problems.append(f"{where}: const {old['const']!r} became {new['const']!r}")
        elif "const" in old and "const" not in new and self._direction == "output":
            problems.append(f"{where}: const {old['const']!r} is no longer fixed")
        if "enum" in old:
            removed = [value for value in old["enum"] if value not in new.get("enum", old["enum"])]
            problems += [f"{where}: enum value {value!r} removed" for value in removed]
        return problems

    def _required(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
        before, after = set(old.get("required", [])), set(new.get("required", []))
        if self._direction == "input":
            return [f"{where}.{name}: newly required" for name in sorted(after - before)]
        return [f"{where}.{name}: no longer always sent" for name in sorted(before - after)]

    def _fields(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
        problems = []
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        for name, schema in old_fields.items():
            if name not in new_fields:
                problems.append(f"{where}.{name}: removed")
            else:
                problems += self.of(schema, new_fields[name], f"{where}.{name}")
        was_open = old.get("additionalProperties", True) is not False
        if self._direction == "input" and was_open and new.get("additionalProperties") is False:
            problems.append(f"{where}: unknown fields are now refused")
        for keyword in ("items", "additionalProperties"):
            if isinstance(old.get(keyword), dict) and isinstance(new.get(keyword), dict):
                problems += self.of(old[keyword], new[keyword], f"{where}[{keyword}]")
        return problems

    def _alternatives(self, old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
        problems = []
        for keyword in ("oneOf", "anyOf"):
            before = [follow(self._released, option)[1] for option in old.get(keyword, [])]
            after = [follow(self._current, option)[1] for option in new.get(keyword, [])]
            lost = [o for o in before if o not in after] if self._direction == "input" else []
            novel = [o for o in after if o not in before] if self._direction == "output" else []
            problems += [f"{where}: {keyword} alternative {o} no longer accepted" for o in lost]
            problems += [f"{where}: {keyword} alternative {o} is new to readers" for o in novel]
        return problems


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)
