"""Both contract documents are valid against their specification's own JSON Schema, taken from
a package that ships it: OpenAPI 3.1's from `openapi-spec-validator` (PyPI), AsyncAPI 3.0's
from `@asyncapi/specs` (npm: no PyPI package ships it; `make contract-tools` installs it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.contracts import ASYNCAPI, CONTRACTS_DIR, OPENAPI, load_document

ASYNCAPI_SPECIFICATION = (
    CONTRACTS_DIR / "tools" / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0.json"
)


def asyncapi_specification() -> dict[str, Any]:
    if not ASYNCAPI_SPECIFICATION.exists():
        pytest.fail(
            f"{ASYNCAPI_SPECIFICATION.relative_to(CONTRACTS_DIR.parent)} is missing: "
            "run `make contract-tools` (npm ci of contracts/tools)",
            pytrace=False,
        )
    schema: dict[str, Any] = json.loads(Path(ASYNCAPI_SPECIFICATION).read_text(encoding="utf-8"))
    return schema


def test_the_asyncapi_document_is_valid_asyncapi_3_0() -> None:
    document = load_document(ASYNCAPI)
    assert document["asyncapi"] == "3.0.0"
    specification = asyncapi_specification()
    assert specification["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    problems = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in Draft7Validator(specification).iter_errors(document)
    ]
    assert problems == []


def test_the_asyncapi_check_would_see_a_broken_document() -> None:
    """The specification's schema is strict enough to matter: a wrong action is refused."""
    document = json.loads(json.dumps(load_document(ASYNCAPI)))
    document["operations"]["sendToRider"]["action"] = "publish"
    assert not Draft7Validator(asyncapi_specification()).is_valid(document)


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = load_document(OPENAPI)
    assert document["openapi"].startswith("3.1.")
    problems = [error.message[:200] for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert problems == []
