"""The nesting check answers exactly what a character-by-character count answers, on any text:
valid JSON or not, strings and escapes included."""

from __future__ import annotations

import random

import pytest

from shared.json_nesting import MAX_LIMIT, nested_deeper_than


def counted_depth(text: str) -> int:
    """The deepest nesting, one character at a time: brackets in strings do not count, a
    string never closed runs to the end, a closer that closes nothing is ignored."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest


def random_texts(count: int, alphabet: str, longest: int) -> list[str]:
    chance = random.Random(f"{alphabet}-{count}-{longest}")
    return [
        "".join(chance.choice(alphabet) for _ in range(chance.randrange(longest)))
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    "alphabet",
    ["[]", "[]{}", "[[[]", "[]]]", '[]{}"', '[]"\\', '[]{}"\\a,:', "[[[[]{}]]]]a"],
)
def test_the_answer_is_the_counted_one(alphabet: str) -> None:
    for text in random_texts(300, alphabet, 300):
        depth = counted_depth(text)
        for limit in (1, 2, 3, 5, 8):
            assert nested_deeper_than(text, limit) is (depth > limit), (text, limit)
            assert nested_deeper_than(text.encode(), limit) is (depth > limit), (text, limit)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[" * 64 + "]" * 64, 64),
        ("[" * 65 + "]" * 65, 65),
        ("[" * 65, 65),
        ("[" * 63 + "[]" * 1000, 64),
        ("[" * 62 + "[[][[]]]" * 100, 65),
        ('{"a": [' * 40 + "1" + "]}" * 40, 80),
        ('["' + "[" * 100 + '"]', 1),
        ('["\\"' + "[" * 100 + '"]', 1),
        ('["\\\\"' + "[" * 100 + "]" * 100 + "]", 101),
        ("]" * 100 + "[" * 64, 64),
        ("[]" * 10_000 + "[" * 64 + "]" * 64 + "[[]]" * 10_000, 64),
    ],
)
def test_deep_and_shallow_shapes(text: str, depth: int) -> None:
    assert counted_depth(text) == depth
    for limit in (1, depth - 1, depth, 64, MAX_LIMIT):
        if 0 < limit <= MAX_LIMIT:
            assert nested_deeper_than(text, limit) is (depth > limit), limit


def test_the_limit_is_a_byte_value_below_the_brackets() -> None:
    assert nested_deeper_than("[" * (MAX_LIMIT + 1), MAX_LIMIT)
    with pytest.raises(ValueError, match="limit"):
        nested_deeper_than("[]", MAX_LIMIT + 1)
