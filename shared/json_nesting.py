"""How deeply a JSON text nests, found before a recursive parser reads it, in time linear in the
text whatever it holds.

Python's json module recurses once per array or object, so what reads untrusted JSON (the
webhook's signed bodies, the notifier's socket frames) bounds the nesting first. Counting
brackets one character at a time in Python costs about 70 ns a byte, and a pattern that
backtracks into strings can cost the square of the length (an unterminated string of `\\"`).
Here the work is at most `limit` + 3 passes over the text, each a bytes method or a pattern
that never backtracks, so C does the per-byte work:

1. strings are removed (a string never closed runs to the end), then every byte but the
   brackets, and `{}` become `[]`: only the nesting is left (more than `limit` openers in a
   row already say enough);
2. round d replaces each innermost pair (holding nothing, or only what earlier rounds left) by
   one byte of value d, the depth of what it stood for; a pair is innermost at round d only
   if its deepest content was replaced at round d - 1, so the byte is its exact depth;
3. after `limit` rounds, a pair still there is deeper than `limit`; otherwise what is left is
   brackets never closed (or closing nothing) and depth bytes, read in one short pass.
"""

from __future__ import annotations

import re
from functools import cache

# A string, escapes included; possessive, so an unterminated one is read once, to the end.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_ALL_BUT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_ANY_PAIR_LEFT = re.compile(rb"\[[^\[\]]*+\]")
# Depths are bytes 1..MAX_LIMIT: none of them may be a bracket.
MAX_LIMIT = ord("[") - 1
_DEPTHS_AS_ZERO = bytes.maketrans(bytes(range(1, MAX_LIMIT + 1)), bytes(MAX_LIMIT))
_SIBLINGS = bytes(2)


def nested_deeper_than(text: bytes | str, limit: int) -> bool:
    """Whether the JSON text opens more than `limit` arrays or objects inside one another.
    Brackets inside strings do not count; one never closed counts as open to the end."""
    if not 0 < limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= limit:
            return False
        text = text.encode("utf-8", "surrogatepass")
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    nesting = _STRING.sub(b"", text).translate(_BRACES_AS_BRACKETS, _ALL_BUT_BRACKETS)
    if b"[" * (limit + 1) in nesting:
        return True
    for depth in range(1, limit + 1):
        nesting, replaced = _replace_innermost_pairs(nesting, depth)
        if not replaced:
            return _deeper_than_left(nesting, limit)
    return _ANY_PAIR_LEFT.search(nesting) is not None or _deeper_than_left(nesting, limit)


def _replace_innermost_pairs(nesting: bytes, depth: int) -> tuple[bytes, bool]:
    """Round `depth`: each pair holding only bytes of earlier rounds becomes the byte `depth`;
    and whether there was any."""
    marker = bytes([depth])
    # The common case first, at the speed of bytes.replace: a pair around one byte of the last
    # round (or around nothing, in the first).
    simplest = b"[" + (bytes([depth - 1]) if depth > 1 else b"") + b"]"
    shorter = nesting.replace(simplest, marker)
    if depth == 1:
        return shorter, len(shorter) < len(nesting)
    # Pairs holding several earlier bytes, if two are side by side anywhere; not those that
    # only became innermost this round (they hold a byte of this round, for the next one).
    others = 0
    if _SIBLINGS in shorter.translate(_DEPTHS_AS_ZERO):
        shorter, others = _pairs_of_earlier_rounds(depth).subn(marker, shorter)
    return shorter, others > 0 or len(shorter) < len(nesting)


@cache
def _pairs_of_earlier_rounds(depth: int) -> re.Pattern[bytes]:
    earlier = re.escape(bytes([1])) + b"-" + re.escape(bytes([depth - 1]))
    return re.compile(rb"\[[" + earlier + rb"]*+\]")


def _deeper_than_left(nesting: bytes, limit: int) -> bool:
    """Whether what no round could pair goes deeper than `limit`: openers never closed, each
    followed by the depths of what it holds. (Closers that close nothing end the document
    early: ignoring them can only find it deeper.)"""
    unclosed = nesting.translate(None, b"]")
    if unclosed.count(b"[") > limit:
        return True
    return any(
        held.translate(None, bytes(range(1, limit - opened + 1))) != b""
        for opened, held in enumerate(unclosed.split(b"["))
    )
