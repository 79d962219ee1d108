"""JSON from untrusted files, parsed within fixed bounds on size, value count, depth and digits.

Python's ``json`` builds every value of a document at once (~100 bytes and more each), recurses
once per nesting level and converts integers of any length, so a small hostile file can ask for
gigabytes, a RecursionError or a slow conversion (and a 5000-digit literal is a ValueError). Everything here is decided before or
while parsing, and every failure is an ``InputError`` naming the file and the limit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import InputError

MAX_JSON_BYTES = 32 << 20      # config.json, indexes, adapter configs, trainer_state.json
MAX_JSON_VALUES = 1 << 20      # values (numbers, strings, containers) in one document
MAX_JSON_DEPTH = 64            # nesting levels; real configs use fewer than 10
MAX_NUMBER_DIGITS = 100        # digits of an integer literal kept exact


class _Refused(Exception):
    """Raised from a parse hook; turned into an InputError naming the file."""


def _parse_int(text: str) -> int | float:
    """An integer literal; one of more than ``MAX_NUMBER_DIGITS`` digits is ±inf, which every
    check for a count or an index refuses by its field name (and outputs write as null)."""
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """Objects with a repeated key are ambiguous (which value wins depends on the reader)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Refused(f"key {key!r} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def value_budget(raw: bytes) -> int:
    """An upper bound on the values a document holds: every value after a container's first
    follows a comma, and every container is opened by a bracket (strings only over-count)."""
    return raw.count(b",") + raw.count(b"{") + raw.count(b"[") + 1


def _depth(doc: object) -> int:
    """Nesting depth of a parsed document, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def parse_json(raw: bytes, where: object, what: str, max_values: int = MAX_JSON_VALUES,
               max_depth: int = MAX_JSON_DEPTH) -> object:
    """``raw`` (UTF-8 JSON) parsed, or an InputError ``"{where}: {what} ..."`` naming the limit."""
    if value_budget(raw) > max_values:
        raise InputError(f"{where}: {what} holds more than {max_values} values (the limit dora-diag reads)")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_int=_parse_int, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise InputError(f"{where}: {what} is nested deeper than {max_depth} levels") from None
    except _Refused as e:
        raise InputError(f"{where}: {what} is refused: {e}") from None
    except (UnicodeDecodeError, ValueError) as e:   # JSONDecodeError is a ValueError
        raise InputError(f"{where}: {what} is not valid JSON ({e})") from None
    if _depth(doc) > max_depth:
        raise InputError(f"{where}: {what} is nested deeper than {max_depth} levels")
    return doc


def read_bounded(path: str | os.PathLike, what: str, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of ``path``, refusing files over ``max_bytes`` before reading them."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise InputError(f"{path}: {what} is {size} bytes, over the {max_bytes}-byte limit")
            return f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def load_json_file(path: Path, what: str) -> object:
    """A JSON file within all the bounds above."""
    return parse_json(read_bounded(path, what), path, what)
