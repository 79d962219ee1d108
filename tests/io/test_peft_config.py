"""PEFT pattern lookups: PEFT's own semantics, bounded in time."""

from __future__ import annotations

import pytest

peft_other = pytest.importorskip("peft.utils.other")

from dora_diag.errors import InputError  # noqa: E402
from dora_diag.io.peft_config import full_match, pattern_value  # noqa: E402

PATHS = ["model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "encoder.layer.3.attention.self.query",
         "q_proj", "model.layers.1.self_attn.v_proj"]
PATTERNS = [{"q_proj": 4}, {"layers.1.*": 2, "v_proj": 8}, {r"model\.layers\.\d+\.mlp\..*": 16},
            {"query": 1, "self_attn.q_proj": 2}, {"layers.0.self_attn.q_proj": 3, "q_proj": 5}, {"v": 6}]


@pytest.mark.parametrize("patterns", PATTERNS)
@pytest.mark.parametrize("path", PATHS)
def test_same_key_as_peft(patterns, path):
    expected = patterns.get(peft_other.get_pattern_key(list(patterns), path), None)
    assert pattern_value(patterns, path, None) == expected


def test_catastrophic_backtracking_is_an_input_error_naming_the_key():
    with pytest.raises(InputError, match=r"cfg.json: rank_pattern key '\(a\|aa\)\+\$' takes over 0.25 s to match"):
        pattern_value({"(a|aa)+$": 4}, "a" * 60 + "b", 8, "cfg.json: rank_pattern key")


@pytest.mark.parametrize("pattern,name,expected", [(r".*\.q_proj", "model.layers.0.q_proj", True),
                                                   ("q_proj", "model.layers.0.q_proj", False),
                                                   (r"layers\.\d+\.(q|v)_proj", "layers.3.v_proj", True)])
def test_full_match_is_re_fullmatch(pattern, name, expected):
    import re

    assert full_match(pattern, name) is expected is (re.fullmatch(pattern, name) is not None)


def test_full_match_is_bounded_in_time():
    with pytest.raises(InputError, match="target pattern '\\(a\\|aa\\)\\+' takes over"):
        full_match("(a|aa)+", "a" * 60 + "b")


@pytest.mark.parametrize("extra, message", [
    ({"target_parameters": ["experts.gate_up_proj"], "use_dora": True}, "use_dora is set together with target_parameters"),
    ({"target_parameters": ["experts.gate_up_proj"], "fan_in_fan_out": True}, "fan_in_fan_out is set together"),
    ({"target_parameters": [""]}, "target_parameters is [''], expected a list of parameter names"),
    ({"target_parameters": {"a": 1}}, "target_parameters is {'a': 1}, expected a list"),
])
def test_target_parameters_are_validated(extra, message):
    from pathlib import Path

    from dora_diag.io.peft_config import parse_adapter_config

    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_adapter_config({"peft_type": "LORA", "r": 2, **extra}, Path("cfg.json"))
    ok = parse_adapter_config({"peft_type": "LORA", "r": 2, "target_parameters": ["experts.down_proj"],
                               "lora_dropout": 0.1}, Path("cfg.json"))
    assert ok.target_parameters == ("experts.down_proj",)
