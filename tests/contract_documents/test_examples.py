"""Every example in the contract documents is valid against the schema it illustrates: the
examples are what other teams copy first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.contracts import ASYNCAPI, OPENAPI, Contract, asyncapi, follow, openapi

Example = tuple[Contract, str, Any]  # the document, the schema's pointer, the example


def walk(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Every object of a document, with its JSON pointer."""
    if isinstance(node, dict):
        yield pointer, node
        for key, child in node.items():
            yield from walk(child, f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from walk(child, f"{pointer}/{index}")


def schema_examples(contract: Contract) -> Iterator[Example]:
    """`examples` of the schemas under components/schemas (JSON Schema's own keyword)."""
    for pointer, node in walk(contract.document):
        in_schemas = pointer.startswith("/components/schemas/")
        if in_schemas and isinstance(node.get("examples"), list):
            yield from ((contract, pointer, example) for example in node["examples"])


def message_examples(contract: Contract) -> Iterator[Example]:
    """AsyncAPI: each message example's payload (JSON messages) and headers."""
    default_type = contract.document.get("defaultContentType")
    for name, message in contract.document["components"]["messages"].items():
        pointer = f"/components/messages/{name}"
        for example in message.get("examples", []):
            if "payload" in example and message.get("contentType", default_type).endswith("json"):
                yield contract, f"{pointer}/payload", example["payload"]
            if "headers" in example:
                yield contract, f"{pointer}/headers", example["headers"]


def media_examples(contract: Contract) -> Iterator[Example]:
    """OpenAPI: `example` and `examples` beside a `schema` (media types, parameters)."""
    for pointer, node in walk(contract.document):
        if "schema" not in node:
            continue
        if "example" in node:
            yield contract, f"{pointer}/schema", node["example"]
        for named in node.get("examples", {}).values():
            yield contract, f"{pointer}/schema", follow(contract.document, named)[1]["value"]


def every_example() -> list[Any]:
    found = [
        *schema_examples(asyncapi()),
        *message_examples(asyncapi()),
        *schema_examples(openapi()),
        *media_examples(openapi()),
    ]
    return [pytest.param(*example, id=f"{example[0].name}#{example[1]}") for example in found]


def test_both_documents_have_examples() -> None:
    documents = {param.values[0].name for param in every_example()}
    assert documents == {ASYNCAPI, OPENAPI}


@pytest.mark.parametrize(("contract", "pointer", "example"), every_example())
def test_the_example_is_valid(contract: Contract, pointer: str, example: Any) -> None:
    assert contract.problems(pointer, example) == []
