"""Client frames: nesting is bounded before parsing, and brackets inside strings do not count."""

from __future__ import annotations

import json

import pytest

from services.notifier.frames import MAX_DEPTH, FrameProblem, parse_frame


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_nesting_up_to_the_limit_parses() -> None:
    assert parse_frame(_nested(MAX_DEPTH))["a"]


@pytest.mark.parametrize(
    "text", [_nested(MAX_DEPTH + 1), "[" * 100_000, "[" * 50_000 + "]" * 50_000, '{"a":[' * 20]
)
def test_deeper_nesting_is_refused_without_parsing(text: str) -> None:
    with pytest.raises(FrameProblem, match="nested too deeply"):
        parse_frame(text)


@pytest.mark.parametrize(
    "value", ["[" * 1_000, '{["' * 300, '\\"' + "[" * 100, "\\" * 40 + '"' + "[" * 40]
)
def test_brackets_and_escaped_quotes_inside_strings_do_not_count(value: str) -> None:
    frame = json.dumps({"userId": value, "type": "register"})
    assert parse_frame(frame)["type"] == "register"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not valid JSON"),
        ('{"n": ' + "9" * 5_000 + "}", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"register"', "JSON object"),
    ],
)
def test_other_problems_are_named(text: str, problem: str) -> None:
    with pytest.raises(FrameProblem, match=problem):
        parse_frame(text)
