"""Conv1D orientation: derived from transformers' modeling source when installed, the table
otherwise; both agree on the families the table lists; unknown types with Conv1D-style names warn."""

from __future__ import annotations

import pytest

from dora_diag.architecture import conv1d, is_transposed, registry
from dora_diag.architecture.registry import infer_model_type, orientation_notes

NAMES = ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj", "lm_head", "h.0.attn.q_proj"]


@pytest.fixture
def no_transformers(monkeypatch):
    monkeypatch.setattr(conv1d, "_models_dir", lambda: None)
    conv1d._modeling_source.cache_clear()
    yield
    conv1d._modeling_source.cache_clear()


def test_derived_attributes_agree_with_the_table():
    pytest.importorskip("transformers")
    for model_type in registry.TRANSPOSED_MODULES:
        assert conv1d.conv1d_attributes(model_type), model_type
        table = registry.TRANSPOSED_MODULES[model_type]
        for name in NAMES + ["decoder.layers.0.mlp.c_fc", "decoder.layers.0.attn.out_proj"]:
            # The table's patterns are stricter (parent module too) than attribute names.
            if table.search(name) or name.endswith(("lm_head", "q_proj", "out_proj")):
                assert is_transposed(model_type, name) == bool(table.search(name)), (model_type, name)
    assert conv1d.conv1d_attributes("gpt_bigcode") == frozenset()     # c_attn, but nn.Linear
    # model types that live in another family's directory (found through its config classes)
    assert conv1d.conv1d_attributes("clvp_decoder") == {"c_fc", "c_proj"}
    assert conv1d.conv1d_attributes("openai-gpt") == {"c_attn", "c_proj", "c_fc"}
    assert conv1d.right_operand_attributes("llama4_text") == {"gate_up_proj", "down_proj"}
    assert conv1d.right_operand_attributes("mixtral") == frozenset()
    assert conv1d.conv1d_attributes("no_such_model") is None
    assert conv1d.conv1d_attributes("../gpt2") is None


def test_table_without_transformers(no_transformers):
    assert [is_transposed("gpt2", n) for n in NAMES] == [True, True, True, True, False, False]
    assert is_transposed("clvp", "speech_decoder_model.model.decoder.layers.0.mlp.c_fc")
    assert not is_transposed("llama", "model.layers.0.mlp.c_proj")
    assert not is_transposed("gpt_bigcode", "transformer.h.0.attn.c_attn")
    assert infer_model_type({}, ["h.0.attn.c_attn.weight"]) == "gpt2"
    assert infer_model_type({"model_type": "bert"}, ["h.0.attn.c_attn.weight"]) == "bert"


def test_unknown_types_with_conv1d_style_names_warn(no_transformers):
    names = ["blocks.0.attn.c_attn.weight", "blocks.0.mlp.c_fc.weight", "blocks.0.mlp.c_proj.weight"]
    (note,) = orientation_notes({"model_type": "mystery"}, names)
    assert "unknown model_type 'mystery': 3 tensor(s) with Conv1D-style names" in note and "1 more" in note
    (note,) = orientation_notes({}, ["h.0.attn.c_attn.weight"])
    assert "no model_type in config.json" in note and "assumed gpt2 (in, out)" in note
    assert orientation_notes({"model_type": "gpt2"}, names) == []
    assert orientation_notes({"model_type": "gpt_bigcode"}, names) == []
    assert orientation_notes({"model_type": "mystery"}, ["layers.0.q_proj.weight"]) == []


FLAGGED = {"gpt_oss": True, "aria_text": True, "openai_privacy_filter": True, "llama4_text": False, "mixtral": False,
           "qwen3_moe": False}


def test_experts_flagged_transposed_derived_and_from_the_table(no_transformers):
    """PEFT reads (in, out) of a 3-D parameter by the experts class' is_transposed flag: Llama 4's
    experts are used as x @ W[e] (right operand) but not flagged."""
    assert {t: registry.experts_flagged_transposed(t) for t in FLAGGED} == FLAGGED
    assert registry.experts_flagged_transposed(None) is False


def test_experts_flag_from_the_modeling_source():
    pytest.importorskip("transformers")
    assert {t: conv1d.flags_experts_transposed(t) for t in FLAGGED} == FLAGGED
    assert conv1d.flags_experts_transposed("no_such_model") is None
