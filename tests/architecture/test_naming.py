"""Layer/module naming, base <-> fine-tuned matching, Conv1D orientation and fused groups."""

from __future__ import annotations

import pytest

from dora_diag.architecture import match_names, module_namer


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
    assert [(got[n].layer, got[n].module) for n in names] == expected


def test_t5_modules_stay_distinct_within_a_stack():
    names = ["decoder.block.0.layer.0.SelfAttention.q.weight", "decoder.block.0.layer.1.EncDecAttention.q.weight",
             "encoder.block.0.layer.0.SelfAttention.q.weight"]
    got = {n: (p.layer, p.module) for n, p in module_namer(names).items()}
    assert got[names[0]] == (0, "decoder.SelfAttention.q")
    assert got[names[1]] == (0, "decoder.EncDecAttention.q")
    assert got[names[2]] == (0, "encoder.SelfAttention.q")


def test_wrapper_prefixes_match_either_way():
    base = ["encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"]
    ft = ["bert.encoder.layer.0.attention.self.query.weight", "bert.embeddings.word_embeddings.weight",
          "classifier.weight"]
    assert match_names(base, ft) == dict(zip(base, ft[:2]))
    got = match_names(["model.layers.0.q.weight"], ["layers.0.q.weight"])
    assert got == {"model.layers.0.q.weight": "layers.0.q.weight"}


def test_ambiguous_suffixes_do_not_match():
    base = ["a.layers.0.q.weight", "b.layers.0.q.weight"]
    assert match_names(base, ["layers.0.q.weight"]) == {}


def _places(names):
    return {n: (p.stack, p.layer, p.module, p.expert) for n, p in module_namer(names).items()}


def test_towers_are_separate_stacks():
    names = ["text_model.encoder.layers.0.self_attn.q_proj.weight",
             "vision_model.encoder.layers.0.self_attn.q_proj.weight", "visual_projection.weight"]
    got = _places(names)
    assert got[names[0]] == ("text_model.encoder", 0, "text_model.q_proj", None)
    assert got[names[1]] == ("vision_model.encoder", 0, "vision_model.q_proj", None)
    assert got[names[2]] == ("", None, "visual_projection", None)


def test_nested_stages_get_depth_order_and_shared_module_types():
    names = [f"encoder.stages.{s}.layers.{b}.layer.{c}.convolution.weight"
             for s in (0, 1) for b in (0, 1) for c in (0, 1)]
    got = _places(names)
    assert [got[n][1] for n in names] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert {got[n][2] for n in names} == {"layer.0.convolution", "layer.1.convolution"}


def test_unet_blocks_in_forward_order():
    names = ["down_blocks.0.resnets.0.conv1.weight",
             "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
             "down_blocks.0.resnets.1.conv1.weight", "down_blocks.1.resnets.0.conv1.weight",
             "mid_block.resnets.0.conv1.weight", "up_blocks.0.resnets.0.conv1.weight",
             "up_blocks.0.upsamplers.0.conv.weight", "down_blocks.1.downsamplers.0.conv.weight", "conv_in.weight"]
    got = _places(names)
    order = [got[n][1] for n in names[:6]]
    assert order == sorted(order) and len(set(order)) == 6
    assert got[names[0]][2] == got[names[4]][2] == "conv1"
    assert got[names[1]][2] == "to_q"
    assert got[names[6]][2] == "upsamplers.conv" and got[names[7]][2] == "downsamplers.conv"
    assert got["conv_in.weight"] == ("", None, "conv_in", None)


def test_experts_share_the_module_and_keep_their_index():
    names = [f"model.layers.0.block_sparse_moe.experts.{e}.w{k}.weight" for e in range(3) for k in (1, 2)]
    got = _places(names)
    assert got[names[0]] == ("", 0, "w1", 0) and got[names[5]] == ("", 0, "w2", 2)


def test_places_are_unique_within_a_checkpoint():
    names = ["encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.block.0.layer.1.DenseReluDense.wi.weight",
             "decoder.block.0.layer.0.SelfAttention.q.weight", "decoder.block.0.layer.1.EncDecAttention.q.weight",
             "a.layers.0.q.weight", "b.layers.0.q.weight", "layers.1.q.weight",
             "encoder.stages.0.layers.0.layer.0.convolution.weight",
             "encoder.stages.0.layers.0.shortcut.convolution.weight"]
    places = list(_places(names).values())
    assert len(set(places)) == len(places)


def test_renamed_modules_match_through_rename():
    base = ["vit.encoder.layer.0.attention.attention.query.weight", "classifier.weight"]
    ft = ["vit.layers.0.attention.q_proj.weight", "classifier.weight"]
    assert match_names(base, ft) == {"classifier.weight": "classifier.weight"}
    def rename(n):
        return n.replace("encoder.layer.", "layers.").replace("attention.attention.query", "attention.q_proj")
    assert match_names(base, ft, rename) == dict(zip(base, ft))
