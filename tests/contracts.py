"""The contract documents (contracts/asyncapi.yaml, contracts/openapi.yaml) as test oracles.

What the system sends is checked against them wherever the tests see it: records on the topics
the AsyncAPI document says the system sends to (read_topic), messages on a rider's socket
(next_message), and the webhook's answers (the end-to-end tests). A topic the document does not
say the system sends to (an input topic, a test's own) passes through unchecked: the tests put
malformed records there on purpose. A message of a known kind that breaks its schema, or a
socket message of a type the contract does not know, fails the test, naming what broke where.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
ASYNCAPI = "asyncapi.yaml"
OPENAPI = "openapi.yaml"

Document = dict[str, Any]


class ContractViolation(AssertionError):
    """Something the system sent is not what the contract describes."""


@functools.cache
def load_document(name: str, directory: Path = CONTRACTS_DIR) -> Document:
    document: Document = yaml.safe_load((directory / name).read_text(encoding="utf-8"))
    return document


def follow(document: Document, node: Any) -> tuple[str, Any]:
    """The node a (chain of) local `$ref` leads to, with its JSON pointer ("" when inline)."""
    pointer = ""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        pointer = node["$ref"].removeprefix("#")
        node = document
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return pointer, node


@dataclass(frozen=True)
class Contract:
    """One document, whose schemas can be used by JSON pointer (their `$ref`s resolved)."""

    name: str
    document: Document
    validator_class: type[Validator]
    registry: Registry[Any]

    @classmethod
    def of(cls, name: str) -> Contract:
        document = load_document(name)
        # AsyncAPI's schemas are JSON Schema draft-07; OpenAPI 3.1's are 2020-12.
        draft, validator_class = (
            (DRAFT7, Draft7Validator) if name == ASYNCAPI else (DRAFT202012, Draft202012Validator)
        )
        resource: Resource[Any] = draft.create_resource(document)
        return cls(name, document, validator_class, Registry().with_resource(name, resource))

    def validator(self, pointer: str) -> Validator:
        return self.validator_class(
            {"$ref": f"{self.name}#{pointer}"},
            registry=self.registry,
            format_checker=self.validator_class.FORMAT_CHECKER,
        )

    def problems(self, pointer: str, instance: Any) -> list[str]:
        """Why `instance` breaks the schema at `pointer` (empty: it does not)."""
        errors: Iterable[ValidationError] = self.validator(pointer).iter_errors(instance)
        return [_described(error) for error in sorted(errors, key=lambda e: list(e.path))]

    def check(self, pointer: str, instance: Any, what: str) -> None:
        problems = self.problems(pointer, instance)
        if problems:
            raise ContractViolation(
                f"{what} breaks {self.name}#{pointer}:\n  "
                + "\n  ".join(problems)
                + f"\nit was: {json.dumps(instance, default=str)[:2000]}"
            )


def _described(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"at {where}: {error.message[:300]}"


@functools.cache
def asyncapi() -> Contract:
    return Contract.of(ASYNCAPI)


@functools.cache
def openapi() -> Contract:
    return Contract.of(OPENAPI)


# ---- what the AsyncAPI document says the system sends ----------------------------------------


@dataclass(frozen=True)
class SentMessage:
    """A message the system sends, as the AsyncAPI document describes it."""

    pointer: str  # of the message object
    content_type: str
    has_headers: bool

    @property
    def payload(self) -> str:
        return f"{self.pointer}/payload"

    @property
    def headers(self) -> str:
        return f"{self.pointer}/headers"


def sent_messages(protocol: str) -> Iterator[tuple[Any, SentMessage]]:
    """(channel, message) for every message of a `send` operation on a channel served over
    `protocol` (kafka, ws)."""
    document = asyncapi().document
    default_type = document.get("defaultContentType", "application/json")
    for operation in document["operations"].values():
        if operation["action"] != "send":
            continue
        _, channel = follow(document, operation["channel"])
        protocols = {follow(document, server)[1]["protocol"] for server in channel["servers"]}
        if protocol not in protocols:
            continue
        for reference in operation["messages"]:
            pointer, message = follow(document, reference)
            content_type = message.get("contentType", default_type)
            yield channel, SentMessage(pointer, content_type, "headers" in message)


@functools.cache
def messages_sent_to_topics() -> dict[str, tuple[SentMessage, ...]]:
    topics: dict[str, tuple[SentMessage, ...]] = {}
    for channel, message in sent_messages("kafka"):
        topics[channel["address"]] = (*topics.get(channel["address"], ()), message)
    return topics


@functools.cache
def messages_sent_on_sockets() -> dict[str, SentMessage]:
    """The messages the notifier sends, by their `type`."""
    kinds = {}
    document = asyncapi().document
    for _, message in sent_messages("ws"):
        _, described = follow(document, {"$ref": f"#{message.pointer}"})
        _, payload = follow(document, described["payload"])
        kinds[payload["properties"]["type"]["const"]] = message
    return kinds


def check_topic_record(
    topic: str, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> None:
    """Hold a record the system sent to `topic` to the contract (other topics pass)."""
    described = messages_sent_to_topics().get(topic)
    if not described:
        return
    failures = [_record_problems(message, value, headers) for message in described]
    if all(failures):
        raise ContractViolation(
            f"a record on topic {topic!r} matches no message the contract describes there:\n"
            + "\n".join(failure for failure in failures if failure)
        )


def _record_problems(
    message: SentMessage, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> str:
    contract, found = asyncapi(), []
    if message.content_type == "application/json":
        try:
            payload = json.loads(value or b"")
        except ValueError as error:
            return f"{message.pointer}: the value is not JSON ({error}): {value!r:.300}"
        found += contract.problems(message.payload, payload)
    if message.has_headers:
        # A header repeated keeps its last value, as the dead-letter readers do.
        texts = {name: data.decode("utf-8", "replace") for name, data in headers}
        found += contract.problems(message.headers, texts)
    return f"{message.pointer}:\n  " + "\n  ".join(found) if found else ""


def check_socket_message(message: Any) -> None:
    """Hold a message the notifier sent on a socket to the contract."""
    kinds = messages_sent_on_sockets()
    kind = message.get("type") if isinstance(message, dict) else None
    if kind not in kinds:
        raise ContractViolation(
            f"the server sent a socket message of a type the contract does not describe "
            f"(known: {sorted(kinds)}): {json.dumps(message)[:500]}"
        )
    asyncapi().check(kinds[kind].payload, message, f"a {kind!r} socket message")


# ---- what the OpenAPI document says the system answers -----------------------------------------


def check_http_answer(method: str, path: str, status: int, body: bytes | str) -> None:
    """Hold an HTTP answer to `method path` (the path as the document names it) to the
    contract: its status must be documented and a JSON body must match its schema."""
    operation = openapi().document["paths"][path][method.lower()]
    responses = operation["responses"]
    what = f"the answer {status} to {method.upper()} {path}"
    if str(status) not in responses:
        raise ContractViolation(f"{what} is not a documented status ({sorted(responses)})")
    pointer, response = follow(openapi().document, responses[str(status)])
    if not pointer:
        pointer = "/paths/" + path.replace("~", "~0").replace("/", "~1")
        pointer += f"/{method.lower()}/responses/{status}"
    if "application/json" not in response.get("content", {}):
        return
    try:
        parsed = json.loads(body)
    except ValueError as error:
        raise ContractViolation(f"{what} is not JSON ({error}): {body!r:.300}") from None
    openapi().check(f"{pointer}/content/application~1json/schema", parsed, what)
