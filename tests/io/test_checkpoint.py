"""Opening checkpoints: files, directories, index shards, HF cache symlinks and refusals."""

from __future__ import annotations

import json
import os

import pytest
import torch

from dora_diag.errors import InputError, UnsupportedError
from dora_diag.io.checkpoint import open_checkpoint
from ckpt_helpers import write_checkpoint

transformers = pytest.importorskip("transformers")


def tiny_llama(tmp_path, shard_size=None):
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    out = tmp_path / "llama"
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out, **kwargs)
    return out, model


def test_transformers_sharded_checkpoint_matches_state_dict(tmp_path):
    out, model = tiny_llama(tmp_path, shard_size="20KB")
    assert (out / "model.safetensors.index.json").is_file()
    ckpt = open_checkpoint(out)
    state = model.state_dict()
    saved = {k for k in state if not k.startswith("lm_head") or not model.config.tie_word_embeddings}
    assert saved <= set(ckpt.tensors) | {"lm_head.weight"}
    assert ckpt.model_type == "llama"
    assert len({t.path for t in ckpt.tensors.values()}) > 1


def test_single_file_and_symlinked_hf_cache_layout(tmp_path):
    out, _ = tiny_llama(tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    snap = tmp_path / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for f in out.iterdir():
        target = blobs / f"blob-{f.name}"
        f.rename(target)
        os.symlink(target, snap / f.name)
    ckpt = open_checkpoint(snap)
    assert "model.layers.0.self_attn.q_proj.weight" in ckpt.tensors
    file_ckpt = open_checkpoint(snap / "model.safetensors")
    assert file_ckpt.tensors.keys() == ckpt.tensors.keys()


def test_index_pointing_at_missing_shard_or_tensor(tmp_path):
    d = write_checkpoint(tmp_path / "m", {"a.weight": torch.ones(2, 2), "b.weight": torch.ones(2, 2)}, shards=2)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    index["weight_map"]["c.weight"] = "model-00001-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="missing from its shard"):
        open_checkpoint(d)
    index["weight_map"]["c.weight"] = "model-00009-of-00009.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="missing shard"):
        open_checkpoint(d)


def test_same_tensor_in_two_shards(tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "dup"
    d.mkdir()
    save_file({"a.weight": torch.ones(2, 2)}, str(d / "one.safetensors"))
    save_file({"a.weight": torch.zeros(2, 2)}, str(d / "two.safetensors"))
    with pytest.raises(InputError, match="two shards"):
        open_checkpoint(d)


def test_pickles_are_refused_never_loaded(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InputError, match="never unpickles"):
        open_checkpoint(d)
    with pytest.raises(InputError, match="never unpickles"):
        open_checkpoint(d / "pytorch_model.bin")


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .safetensors"):
        open_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize("quant,name", [
    ({"quant_method": "gptq", "bits": 4}, "gptq"),
    ({"quant_method": "awq"}, "awq"),
    ({"load_in_4bit": True}, "bitsandbytes"),
])
def test_packed_quantized_checkpoints_name_the_method(tmp_path, quant, name):
    d = write_checkpoint(tmp_path / "q", {"a.weight": torch.ones(2, 2)}, {"model_type": "llama",
                                                                        "quantization_config": quant})
    with pytest.raises(UnsupportedError, match=name):
        open_checkpoint(d)
