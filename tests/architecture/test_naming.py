"""Layer/module naming, base <-> fine-tuned matching, Conv1D orientation and fused groups."""

from __future__ import annotations

import pytest

from dora_diag.architecture import fused_groups, is_transposed, match_names, module_namer
from dora_diag.architecture.registry import infer_model_type


@pytest.mark.parametrize("names,expected", [
    (["model.layers.3.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight", "model.embed_tokens.weight"],
     [(3, "q_proj"), (3, "down_proj"), (None, "embed_tokens")]),
    (["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.mlp.c_proj.weight", "h.0.mlp.c_fc.weight"],
     [(0, "c_attn"), (0, "attn.c_proj"), (0, "mlp.c_proj"), (0, "c_fc")]),
    (["encoder.layer.1.attention.self.query.weight", "encoder.layer.1.attention.output.dense.weight",
      "encoder.layer.1.intermediate.dense.weight", "encoder.layer.1.output.dense.weight"],
     [(1, "query"), (1, "attention.output.dense"), (1, "intermediate.dense"), (1, "output.dense")]),
    (["encoder.block.2.layer.0.SelfAttention.q.weight", "decoder.block.2.layer.1.EncDecAttention.q.weight"],
     [(2, "encoder.SelfAttention.q"), (2, "decoder.EncDecAttention.q")]),
    (["transformer.h.5.self_attention.query_key_value.weight"], [(5, "query_key_value")]),
])
def test_module_names(names, expected):
    got = module_namer(names)
    assert [got[n] for n in names] == expected


def test_t5_modules_stay_distinct_within_a_stack():
    names = ["decoder.block.0.layer.0.SelfAttention.q.weight", "decoder.block.0.layer.1.EncDecAttention.q.weight",
             "encoder.block.0.layer.0.SelfAttention.q.weight"]
    got = module_namer(names)
    assert got[names[0]] == (0, "decoder.SelfAttention.q")
    assert got[names[1]] == (0, "decoder.EncDecAttention.q")
    assert got[names[2]] == (0, "encoder.SelfAttention.q")


def test_wrapper_prefixes_match_either_way():
    base = ["encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"]
    ft = ["bert.encoder.layer.0.attention.self.query.weight", "bert.embeddings.word_embeddings.weight",
          "classifier.weight"]
    assert match_names(base, ft) == dict(zip(base, ft[:2]))
    assert match_names(["model.layers.0.q.weight"], ["layers.0.q.weight"]) == {"model.layers.0.q.weight": "layers.0.q.weight"}


def test_ambiguous_suffixes_do_not_match():
    base = ["a.layers.0.q.weight", "b.layers.0.q.weight"]
    assert match_names(base, ["layers.0.q.weight"]) == {}


def test_conv1d_orientation_comes_from_model_type_not_shape():
    assert is_transposed("gpt2", "h.0.attn.c_attn")
    assert is_transposed("gpt2", "transformer.h.0.mlp.c_proj")
    assert not is_transposed("gpt2", "lm_head")
    assert not is_transposed("llama", "model.layers.0.mlp.c_proj")
    assert infer_model_type({}, ["h.0.attn.c_attn.weight"]) == "gpt2"
    assert infer_model_type({"model_type": "bert"}, ["h.0.attn.c_attn.weight"]) == "bert"


def test_fused_groups():
    cfg = {"n_embd": 8, "n_head": 2}
    assert fused_groups("gpt2", "h.0.attn.c_attn", cfg, 24) == [("q", slice(0, 8)), ("k", slice(8, 16)),
                                                                ("v", slice(16, 24))]
    gqa = {"hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert fused_groups("phi3", "layers.0.self_attn.qkv_proj", gqa, 16) == [("q", slice(0, 8)), ("k", slice(8, 12)),
                                                                         ("v", slice(12, 16))]
    neox = {"hidden_size": 4, "num_attention_heads": 2}
    groups = dict(fused_groups("gpt_neox", "layers.0.attention.query_key_value", neox, 12))
    assert groups == {"q": [0, 1, 6, 7], "k": [2, 3, 8, 9], "v": [4, 5, 10, 11]}
    assert fused_groups("gpt2", "h.0.attn.c_attn", cfg, 25) is None  # rows disagree with config
    assert fused_groups("gpt2", "h.0.attn.c_attn", {}, 24) is None    # config lacks head counts
