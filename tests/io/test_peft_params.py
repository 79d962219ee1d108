"""PEFT LoRA on raw parameters (``target_parameters``) of fused MoE experts, read from the factors.

The models hold ``experts.gate_up_proj (E, 2I, H)`` / ``down_proj (E, H, I)`` in memory and
``save_pretrained`` writes them per expert (``experts.{e}.gate_proj.weight``, Mixtral
``block_sparse_moe.experts.{e}.w1.weight``); every adapted part must equal (a) a float64
reference from the live ParamWrapper's factors and (b) the compare of PEFT's own merge.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dora_diag

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
if not hasattr(pytest.importorskip("peft.tuners.lora.layer"), "ParamWrapper"):
    pytest.skip("this peft has no target_parameters (ParamWrapper)", allow_module_level=True)
if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("transformers < 5 holds MoE experts as separate modules, not 3-D parameters", allow_module_level=True)
from ckpt_helpers import reference_changes, write_checkpoint  # noqa: E402
from cli_helpers import assert_one_line_error, call  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from dora_diag.errors import InputError, UnsupportedError  # noqa: E402
from dora_diag.io.checkpoint import open_checkpoint  # noqa: E402
from dora_diag.io.peft import open_adapter  # noqa: E402
from dora_diag.io.safetensors_file import read_header  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

EXPERTS = ["experts.gate_up_proj", "experts.down_proj"]
CASES = {
    "qwen3_moe": ("qwen3_moe", dict(r=2, lora_alpha=5, target_modules=["q_proj"],
                                    target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])),
    "mixtral_rslora_patterns": ("mixtral", dict(r=3, lora_alpha=4, use_rslora=True, target_modules=["v_proj"],
                                                target_parameters=EXPERTS,
                                                rank_pattern={"layers.1.mlp.experts.down_proj": 2},
                                                alpha_pattern={"gate_up_proj": 7})),
    "gate_up_only": ("qwen3_moe", dict(r=2, lora_alpha=3, target_modules=[], target_parameters=EXPERTS[:1])),
}
# How each family stores a fused parameter: the in-memory owner's stored spelling, parts in row order.
STORED = {"qwen3_moe": (".mlp.", {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}),
          "mixtral": (".block_sparse_moe.", {"gate_up_proj": ("w1", "w3"), "down_proj": ("w2",)})}


def _reference(case, family: str) -> dict[str, tuple[int, dict, str]]:
    """Stored tensor -> (expert, reference_changes, fused parameter) from PEFT's definition of ΔW
    (``einsum("o r e, e r i -> e o i")`` of B (out, r, E) and A (E, r, in), times the scaling)."""
    base = load_file(case.base / "model.safetensors")
    spelling, parts = STORED[family]
    out = {}
    for param, (A, B, scaling, experts) in case.param_factors.items():
        r = A.shape[0] // experts
        delta = torch.einsum("ore,eri->eoi", B.reshape(B.shape[0], r, experts),
                             A.reshape(experts, r, A.shape[1])) * scaling
        owner, leaf = param.rsplit(".", 1)
        stored_owner = owner.replace(".mlp.", spelling)
        for e in range(experts):
            for j, chunk in enumerate(delta[e].chunk(len(parts[leaf]))):
                name = f"{stored_owner}.{e}.{parts[leaf][j]}.weight"
                w0 = base[name].double()
                out[name] = (e, reference_changes(w0, w0 + chunk), param)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_experts_match_fp64_reference_and_peft_merge(make_adapter, name):
    family, kwargs = CASES[name]
    case = make_adapter(family, **kwargs)
    assert case.param_factors and all(f[3] > 1 and f[0].shape[0] // f[3] > 1 for f in case.param_factors.values())
    a = dora_diag.compare(case.base, case.adapter)
    ta = a.table.set_index("tensor").sort_index()
    reference = _reference(case, family)
    assert set(reference) <= set(ta.index)
    for tensor, (expert, ref, _) in reference.items():
        row = ta.loc[tensor]
        assert row["expert"] == expert
        for col in ("delta_m", "delta_d", "rel_delta_m"):
            assert row[col] == pytest.approx(ref[col], rel=1e-5), (tensor, col)
    # each factor is read once, though every expert and part of a module uses it
    adapter_bytes = sum(i.nbytes for i in read_header(str(case.adapter / "adapter_model.safetensors"))[0].values())
    base = open_checkpoint(case.base).tensors
    assert a.meta.bytes_read == sum(base[n].nbytes for n in ta.index) + adapter_bytes
    merged = dora_diag.compare(case.base, case.merged).table.set_index("tensor").sort_index()
    changed = merged[(merged["delta_m"] > 0) | (merged["delta_d"] > 0)]
    assert list(changed.index) == list(ta.index)   # nothing dropped, nothing extra: q/v_proj too
    for col in ("delta_m", "delta_d", "rel_delta_m", "rows", "cols", "expert", "module", "layer"):
        if ta[col].dtype.kind == "f":
            np.testing.assert_allclose(ta[col], changed[col], rtol=1e-5, err_msg=col)
        else:
            assert list(ta[col]) == list(changed[col]), col


@pytest.mark.parametrize("name", list(CASES))
def test_every_value_equals_peft_merge(make_adapter, name):
    """``verify``: the effective weights agree element-wise with merge_and_unload() (not only in
    their ΔM/ΔD); the rank reported per tensor is PEFT's r per expert (rank_pattern included)."""
    family, kwargs = CASES[name]
    case = make_adapter(family, **kwargs)
    result = dora_diag.verify(case.base, case.merged, case.adapter)
    assert result.ok, result.problems
    adapted = [r["tensor"] for r in result.records if r["adapted"]]
    assert len(adapted) == len(_reference(case, family)) + 2 * bool(kwargs["target_modules"])   # 2 layers
    source = open_adapter(str(case.adapter), open_checkpoint(case.base))
    for tensor, (_, _, param) in _reference(case, family).items():
        A, _, scaling, experts = case.param_factors[param]
        assert source.rank_and_scale(tensor) == (A.shape[0] // experts, pytest.approx(scaling))


@pytest.mark.parametrize("family,peft_reads", [("gpt_oss", "eio"), ("llama4", "eoi")])
def test_stored_3d_experts_match_reference_and_peft_merge(make_adapter, family, peft_reads):
    """gpt-oss and Llama 4 store their experts as (E, in, out) tensors used as ``x @ W[e]``: expert
    e's slice ``name[e]`` is measured per output channel (a stored column). PEFT adds ΔW_eᵀ to
    gpt-oss' (its experts say ``is_transposed``) but ΔW_e to Llama 4's, read as (E, out, in)."""
    case = make_adapter(family, r=2, lora_alpha=3, target_modules=["q_proj"], target_parameters=EXPERTS)
    base = load_file(case.base / "model.safetensors")
    a = dora_diag.compare(case.base, case.adapter, split_fused=True).table.set_index(["tensor", "group"]).sort_index()
    for param, (A, B, scaling, experts) in case.param_factors.items():
        r = A.shape[0] // experts
        delta = torch.einsum(f"ore,eri->{peft_reads}", B.reshape(B.shape[0], r, experts),
                             A.reshape(experts, r, A.shape[1])) * scaling
        for e in range(experts):
            w0 = base[param][e].double()
            ref = reference_changes(w0.T, (w0 + delta[e]).T)   # channels: stored columns
            row = a.loc[(f"{param}[{e}]", "")]
            assert (row["expert"], row["rows"], row["cols"]) == (e, w0.shape[1], w0.shape[0])
            for col in ("delta_m", "delta_d"):
                assert row[col] == pytest.approx(ref[col], rel=1e-5), (param, e, col)
    merged = dora_diag.compare(case.base, case.merged, split_fused=True).table.set_index(["tensor", "group"])
    merged = merged.loc[a.index]
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        np.testing.assert_allclose(a[col], merged[col], rtol=1e-5, err_msg=col)
    assert {g for _, g in a.index} == {"", "gate", "up"}
    result = dora_diag.verify(case.base, case.merged, case.adapter)
    assert result.ok, result.problems
    assert sum(r["adapted"] for r in result.records) == 6


def _patched(case, **patch):
    path = case.adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **patch}))
    return case


@pytest.mark.parametrize("patch, error, message", [
    ({"use_dora": True}, UnsupportedError, "use_dora is set together with target_parameters; PEFT applies no DoRA"),
    ({"fan_in_fan_out": True}, UnsupportedError, "fan_in_fan_out is set together with target_parameters"),
    ({"target_parameters": "experts.down_proj"}, InputError, "target_parameters is 'experts.down_proj', expected a list"),
    ({"target_parameters": None}, InputError, "this adapter changes 2 tensors, 0 found in the base"),
    ({"r": 3}, InputError, r"factors \[6, 16\] x \[24, 6\] fit none of the targeted parameters"),
])
def test_unreadable_combinations_are_one_clear_error(make_adapter, patch, error, message):
    case = _patched(make_adapter("qwen3_moe", **CASES["gate_up_only"][1]), **patch)
    with pytest.raises(error, match=message):
        dora_diag.compare(case.base, case.adapter)


def test_adapter_for_another_moe_is_refused(make_adapter):
    ours = make_adapter("qwen3_moe", **CASES["gate_up_only"][1])
    other = make_adapter("mixtral", **CASES["gate_up_only"][1])
    with pytest.raises(InputError, match="fit none of the targeted parameters"):
        dora_diag.compare(other.base, ours.adapter)


def test_refusal_is_one_line_on_the_command_line(make_adapter, capsys):
    case = _patched(make_adapter("qwen3_moe", **CASES["gate_up_only"][1]), use_dora=True)
    capsys.readouterr()   # the models' save messages
    code, _, err = call(capsys, "compare", "-q", str(case.base), str(case.adapter))
    assert_one_line_error(code, err, "use_dora is set together with target_parameters")


@pytest.mark.parametrize("targets, message", [
    (["experts.a", "experts.b"], r"factors \[4, 6\] x \[4, 4\] fit 2 of the targeted parameters"),
    (["experts.a"], "layers.0.mlp.experts: two modules' factors both fit only layers.0.mlp.experts.a"),
])
def test_nested_wrappers_that_shapes_cannot_tell_apart_are_refused(tmp_path, targets, message):
    """Two wrappers on one module whose factors fit the same parameter(s): the file does not say which is whose."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    base = write_checkpoint(tmp_path / "base", {f"layers.0.mlp.experts.{k}": torch.randn(2, 4, 6, generator=g)
                                                for k in ("a", "b")})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    prefix = "base_model.model.layers.0.mlp.experts."
    save_file({f"{prefix}{wrap}lora_{f}.weight": torch.randn(*shape, generator=g)
               for wrap in ("", "base_layer.") for f, shape in (("A", (4, 6)), ("B", (4, 4)))},
              str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                                                             "target_parameters": targets}))
    with pytest.raises(InputError, match=message):
        dora_diag.compare(base, adapter)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family,kwargs", [CASES["mixtral_rslora_patterns"],
                                           ("gpt_oss", dict(r=2, target_modules=[], target_parameters=EXPERTS))])
def test_cuda_matches_cpu(make_adapter, family, kwargs):
    case = make_adapter(family, **kwargs)
    cpu = dora_diag.compare(case.base, case.adapter, device="cpu").table
    gpu = dora_diag.compare(case.base, case.adapter, device="cuda").table
    for col in ("delta_m", "delta_d"):
        np.testing.assert_allclose(gpu[col], cpu[col], rtol=1e-5, err_msg=col)
