"""Bounded JSON parsing: every limit refuses with the file named, before memory or recursion blow up."""

from __future__ import annotations

import math

import pytest

from dora_diag.errors import InputError
from dora_diag.io.json_limits import (MAX_JSON_DEPTH, load_json_file, parse_json, read_bounded, value_budget)


def test_ordinary_documents_parse_unchanged():
    doc = {"a": [1, 2.5, None, True, "x"], "b": {"c": -7}}
    assert parse_json(b'{"a": [1, 2.5, null, true, "x"], "b": {"c": -7}}', "f", "doc") == doc


@pytest.mark.parametrize("depth,ok", [(MAX_JSON_DEPTH, True), (MAX_JSON_DEPTH + 1, False), (900, False),
                                      (100_000, False)])
def test_depth(depth, ok):
    raw = ("[" * depth + "]" * depth).encode()
    if ok:
        parse_json(raw, "f", "doc")
    else:
        with pytest.raises(InputError, match=f"f: doc is nested deeper than {MAX_JSON_DEPTH} levels"):
            parse_json(raw, "f", "doc")


def test_the_value_budget_is_checked_before_parsing():
    raw = ("[" + ",".join(["0"] * 1000) + "]").encode()
    assert value_budget(raw) >= 1000
    with pytest.raises(InputError, match="holds more than 999 values"):
        parse_json(raw, "f", "doc", max_values=999)
    assert len(parse_json(raw, "f", "doc", max_values=1002)) == 1000


@pytest.mark.parametrize("digits", [101, 400, 5000, 100_000])
def test_integers_too_long_to_keep_exact_are_infinite(digits):
    assert parse_json(("[" + "9" * digits + ", -" + "9" * digits + "]").encode(), "f", "doc") == [math.inf, -math.inf]
    assert parse_json(("9" * 100).encode(), "f", "doc") == int("9" * 100)


@pytest.mark.parametrize("raw", [b'{"a": 1, "a": 2}', b'[{"k": {"x": 1, "x": 1}}]'])
def test_duplicate_keys_are_refused(raw):
    with pytest.raises(InputError, match="appears twice in one object"):
        parse_json(raw, "f", "doc")


@pytest.mark.parametrize("raw", [b"{", b"\xff\xfe", b"[1,]", b""])
def test_invalid_json_names_the_file(raw):
    with pytest.raises(InputError, match="f: doc is not valid JSON"):
        parse_json(raw, "f", "doc")


def test_file_size_is_checked_before_reading(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("[" + " " * 100 + "]")
    with pytest.raises(InputError, match="c.json: config is 102 bytes, over the 50-byte limit"):
        read_bounded(p, "config", max_bytes=50)
    assert load_json_file(p, "config") == []
    with pytest.raises(InputError, match="cannot read config"):
        load_json_file(tmp_path / "missing.json", "config")
