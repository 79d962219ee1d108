"""The builtin model: shapes, causality, names the analyzer understands, safe save/load; the builtin tasks."""

from __future__ import annotations

import json

import pytest
import torch

import dora_diag
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.train.data import BUILTIN_LENGTH, IGNORE, builtin_task, substitution
from dora_diag.train.model import (MODEL_TYPE, BuiltinConfig, BuiltinTransformer, load_builtin,
                                   save_full_model, unique_state)

SMALL = BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    model = BuiltinTransformer(SMALL).eval()
    ids = torch.randint(SMALL.vocab_size, (3, 10))
    logits = model(ids)
    assert logits.shape == (3, 10, SMALL.vocab_size)
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % SMALL.vocab_size
    after = model(changed)
    assert torch.allclose(logits[:, :7], after[:, :7], atol=1e-6)
    assert not torch.allclose(logits[:, 7:], after[:, 7:])
    clf = BuiltinTransformer(BuiltinConfig(**{**SMALL.__dict__, "num_labels": 3}))
    assert clf(ids).shape == (3, 3)


def test_too_long_input_is_an_input_error():
    with pytest.raises(InputError, match="max_position_embeddings"):
        BuiltinTransformer(SMALL)(torch.zeros(1, SMALL.max_position_embeddings + 1, dtype=torch.long))


def test_save_load_roundtrip_and_llama_names(tmp_path):
    model = BuiltinTransformer(SMALL).eval()
    save_full_model(model, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == MODEL_TYPE and cfg["num_hidden_layers"] == 2
    names = set(open_checkpoint(tmp_path).tensors)
    for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert f"layers.1.self_attn.{m}.weight" in names
    for m in ("gate_proj", "up_proj", "down_proj"):
        assert f"layers.0.mlp.{m}.weight" in names
    assert {"embed_tokens.weight", "lm_head.weight"} <= names
    ids = torch.randint(SMALL.vocab_size, (2, 6))
    assert torch.equal(load_builtin(tmp_path).eval()(ids), model(ids))


def test_analyzer_names_layers_and_modules(tmp_path):
    torch.manual_seed(0)
    model = BuiltinTransformer(SMALL)
    (tmp_path / "base").mkdir(), (tmp_path / "ft").mkdir()
    save_full_model(model, tmp_path / "base")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    save_full_model(model, tmp_path / "ft")
    table = dora_diag.compare(tmp_path / "base", tmp_path / "ft").table
    q = table[table["module"] == "q_proj"]
    assert sorted(q["layer"].tolist()) == [0, 1]
    assert {"k_proj", "o_proj", "gate_proj", "down_proj"} <= set(table["module"])


def test_load_refuses_foreign_or_mismatched_dirs(tmp_path):
    save_full_model(BuiltinTransformer(SMALL), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(InputError, match="do not fit the config"):
        load_builtin(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(InputError, match="model_type"):
        load_builtin(tmp_path)


def test_unique_state_keeps_tied_weights_once():
    model = BuiltinTransformer(SMALL)
    model.lm_head.weight = model.embed_tokens.weight
    state = unique_state(model)
    assert "embed_tokens.weight" in state and "lm_head.weight" not in state


def test_task_b_is_task_a_reversed():
    a, b = builtin_task("A", 5, seed=3), builtin_task("B", 5, seed=3)
    L = BUILTIN_LENGTH
    assert torch.equal(a.input_ids[:, :L + 2], b.input_ids[:, :L + 2])
    assert torch.equal(b.input_ids[:, L + 2:], a.input_ids[:, L + 2:].flip(1))
    x = a.input_ids[:, 1:L + 1] - 2
    assert torch.equal(a.input_ids[:, L + 2:] - 2, substitution()[x])
    assert (a.labels[:, :L + 2] == IGNORE).all() and torch.equal(a.labels[:, L + 2:], a.input_ids[:, L + 2:])
    assert torch.equal(builtin_task("A", 5, seed=3).input_ids, a.input_ids)
    with pytest.raises(InputError, match="unknown builtin task"):
        builtin_task("C", 1, 0)


def test_split_is_seeded_and_disjoint():
    data = builtin_task("A", 50, seed=0)
    train, held = data.split(0.2, seed=1)
    assert len(train) == 40 and len(held) == 10
    assert sorted(train.input_ids.tolist() + held.input_ids.tolist()) == sorted(data.input_ids.tolist())
    assert torch.equal(data.split(0.2, seed=1)[1].input_ids, held.input_ids)
