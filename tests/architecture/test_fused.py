"""Fused projections: the --split-fused row groups must be the rows each model's own forward
uses as q, k and v. Each output row r of the fused weight is made to output exactly r + 1 for
the layer's input; the query/key/value tensors handed to the attention function then name
their rows. One token at position 0, where rotary embeddings are the identity."""

from __future__ import annotations

import importlib

import pytest
import torch

from dora_diag.architecture import fused_groups
from dora_diag.errors import InputError

transformers = pytest.importorskip("transformers")

_T = dict(vocab_size=40)
CASES = {
    # name: (model class, config class, config, fused module path)
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", dict(_T, n_embd=16, n_layer=1, n_head=2), "transformer.h.0.attn.c_attn"),
    "gpt_bigcode": ("GPTBigCodeForCausalLM", "GPTBigCodeConfig", dict(_T, n_embd=16, n_layer=1, n_head=2,
                    multi_query=False), "transformer.h.0.attn.c_attn"),
    "gpt_bigcode_mq": ("GPTBigCodeForCausalLM", "GPTBigCodeConfig", dict(_T, n_embd=16, n_layer=1, n_head=2,
                       multi_query=True), "transformer.h.0.attn.c_attn"),
    "codegen": ("CodeGenForCausalLM", "CodeGenConfig", dict(_T, n_embd=32, n_layer=1, n_head=4, rotary_dim=4),
                "transformer.h.0.attn.qkv_proj"),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(_T, hidden_size=16, intermediate_size=24,
                 num_hidden_layers=1, num_attention_heads=2), "gpt_neox.layers.0.attention.query_key_value"),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", dict(_T, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
             num_attention_heads=4, num_key_value_heads=2, pad_token_id=0), "model.layers.0.self_attn.qkv_proj"),
    "falcon": ("FalconForCausalLM", "FalconConfig", dict(_T, hidden_size=16, num_hidden_layers=1,
               num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True),
               "transformer.h.0.self_attention.query_key_value"),
}


def _build(case):
    cls_name, cfg_name, cfg, path = CASES[case]
    cls, cfg_cls = getattr(transformers, cls_name, None), getattr(transformers, cfg_name, None)
    if cls is None:
        pytest.skip(f"transformers lacks {cls_name}")
    config = cfg_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return cls(config).eval(), config, path


def _forward_rows(model, path: str, monkeypatch) -> dict[str, set[int]]:
    """{q, k, v: fused output rows} as the model's forward splits them."""
    fused = model.get_submodule(path)
    seen = {}
    fused.register_forward_pre_hook(lambda m, args: seen.update(x=args[0].detach().reshape(-1)))
    ids = torch.tensor([[1]])
    with torch.no_grad():
        model(input_ids=ids)
        x = seen["x"]
        w = fused.weight
        conv1d = isinstance(fused, transformers.pytorch_utils.Conv1D)
        rows = w.shape[1] if conv1d else w.shape[0]
        marker = torch.arange(1, rows + 1, dtype=torch.float32)[:, None] * x[None, :] / x.dot(x)
        w.copy_(marker.T if conv1d else marker)
        if getattr(fused, "bias", None) is not None:
            fused.bias.zero_()
    captured = _capture_qkv(model, path, monkeypatch)
    with torch.no_grad():
        model(input_ids=ids)
    return {g: {round(float(t)) - 1 for t in captured[g].flatten()} for g in "qkv"}


def _capture_qkv(model, path: str, monkeypatch) -> dict[str, torch.Tensor]:
    """Falcon splits in ``_split_heads``; the others hand q, k, v to ``eager_attention_forward``."""
    captured: dict[str, torch.Tensor] = {}
    attention = model.get_submodule(path.rsplit(".", 1)[0])
    if hasattr(attention, "_split_heads"):
        split = type(attention)._split_heads

        def capture_split(self, fused_qkv):
            q, k, v = split(self, fused_qkv)
            captured.update(q=q, k=k, v=v)
            return q, k, v
        monkeypatch.setattr(type(attention), "_split_heads", capture_split)
        return captured
    module = importlib.import_module(type(model).__module__)
    original = module.eager_attention_forward

    def capture(mod, query, key, value, *args, **kwargs):
        captured.update(q=query, k=key, v=value)
        return original(mod, query, key, value, *args, **kwargs)
    monkeypatch.setattr(module, "eager_attention_forward", capture)
    return captured


@pytest.mark.parametrize("case", list(CASES))
def test_split_matches_the_models_forward(case, monkeypatch):
    model, config, path = _build(case)
    expected = _forward_rows(model, path, monkeypatch)
    fused = model.get_submodule(path)
    rows = fused.weight.shape[1 if isinstance(fused, transformers.pytorch_utils.Conv1D) else 0]
    groups = fused_groups(config.model_type, path, config.to_dict(), rows)
    got = {g: set(range(rows)[idx]) if isinstance(idx, slice) else set(idx) for g, idx in groups}
    assert got == expected
    assert sorted(i for g in got.values() for i in g) == list(range(rows))


def test_unknown_fused_layouts_are_refused():
    cfg = {"hidden_size": 16, "num_attention_heads": 2}
    with pytest.raises(InputError, match="no known row layout of 'qkv_proj' for model type 'mystery'"):
        fused_groups("mystery", "layers.0.attn.qkv_proj", cfg, 48)
    with pytest.raises(InputError, match="config.json does not give the 50 rows"):
        fused_groups("phi3", "layers.0.self_attn.qkv_proj", cfg, 50)
    assert fused_groups("mystery", "layers.0.attn.q_proj", cfg, 16) is None


def test_stored_experts_split_gate_and_up():
    groups = fused_groups("mixtral", "layers.0.mlp.experts.gate_up_proj", {}, 8, expert=True)
    assert groups == [("gate", slice(0, 4)), ("up", slice(4, 8))]
    groups = dict(fused_groups("gpt_oss", "layers.0.mlp.experts.gate_up_proj", {}, 8, expert=True))
    assert groups == {"gate": [0, 2, 4, 6], "up": [1, 3, 5, 7]}
    assert fused_groups("mixtral", "layers.0.mlp.experts.down_proj", {}, 8, expert=True) is None
    with pytest.raises(InputError, match="not \\[gate, up\\]"):
        fused_groups("mixtral", "layers.0.mlp.experts.gate_up_proj", {}, 7, expert=True)


def test_split_fused_on_an_unknown_layout_is_one_line_exit_2(tmp_path, capsys):
    from ckpt_helpers import write_checkpoint
    from cli_helpers import assert_one_line_error, call

    w = {"model.layers.0.self_attn.qkv_proj.weight": torch.randn(48, 16)}
    cfg = {"model_type": "mystery", "hidden_size": 16, "num_attention_heads": 2}
    base = write_checkpoint(tmp_path / "base", w, cfg)
    ft = write_checkpoint(tmp_path / "ft", {k: v + 0.01 for k, v in w.items()}, cfg)
    code, _, err = call(capsys, "compare", "-q", str(base), str(ft), "--split-fused")
    assert_one_line_error(code, err, "no known row layout of 'qkv_proj' for model type 'mystery'")
    assert call(capsys, "compare", "-q", str(base), str(ft))[0] == 0
