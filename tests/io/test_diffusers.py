"""diffusers pipelines and LoRA files: ΔM/ΔD of the adapter equal those of diffusers' own fuse,
and kohya-style LyCORIS files on a pipeline equal LyCORIS's merge (files written by the libraries)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dora_diag

pytest.importorskip("diffusers")
pytest.importorskip("peft")
from tiny_diffusers import TEXT_LORA, UNET_LORA, make_case, make_kohya_case  # noqa: E402
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import open_checkpoint
from dora_diag.io.sources import open_source

pytestmark = pytest.mark.filterwarnings("ignore")


def _assert_same_changes(base, adapter, merged) -> dora_diag.Analysis:
    a = dora_diag.compare(base, adapter)
    ours = a.table.sort_values("tensor").reset_index(drop=True)
    full = dora_diag.compare(base, merged).table
    changed = full[(full["delta_m"] > 0) | (full["delta_d"] > 0)]
    theirs = full[full["tensor"].isin(ours["tensor"])].sort_values("tensor").reset_index(drop=True)
    assert sorted(ours["tensor"]) == sorted(changed["tensor"]) and len(ours) > 20
    for col in ("delta_m", "delta_d", "rel_delta_m"):
        np.testing.assert_allclose(ours[col], theirs[col], rtol=1e-5, err_msg=col)
    return a


@pytest.mark.parametrize("use_dora", [False, True])
def test_diffusers_lora_matches_diffusers_fuse(tmp_path, use_dora):
    case = make_case(tmp_path, use_dora=use_dora)
    a = _assert_same_changes(case.base, case.lora, case.merged)
    assert {c.kind for r in a.meta.runs for c in r.checkpoints} == {"dora" if use_dora else "lora"}
    components = {t.split(".")[0] for t in a.table["tensor"]}
    assert components == {"unet", "text_encoder"}


def test_component_configs_come_from_the_file_metadata(tmp_path):
    case = make_case(tmp_path)
    source = open_source(str(case.lora), open_checkpoint(case.base))
    unet = next(m for m in source.infos() if m.startswith("unet.") and "to_q" in m).removesuffix(".weight")
    text = next(m for m in source.infos() if m.startswith("text_encoder.")).removesuffix(".weight")
    assert source.adapter_config.rank_and_scale(unet) == (2, UNET_LORA["lora_alpha"] / 2)
    assert source.adapter_config.rank_and_scale(text) == (4, TEXT_LORA["lora_alpha"] / 4)


def test_without_metadata_the_scale_is_one_as_diffusers_loads_it(tmp_path):
    case = make_case(tmp_path, metadata=False)
    source = open_source(str(case.lora), open_checkpoint(case.base))
    scales = {source.adapter_config.rank_and_scale(n.removesuffix(".weight"))[1] for n in source.infos()}
    assert scales == {1.0}


def test_pipeline_is_a_checkpoint_with_component_prefixes(tmp_path):
    case = make_case(tmp_path)
    ckpt = open_checkpoint(case.base)
    assert {n.split(".")[0] for n in ckpt.tensors} == {"unet", "vae", "text_encoder"}
    assert all(info.name == name for name, info in ckpt.tensors.items())
    full = dora_diag.compare(case.base, case.merged)
    assert not any(t.startswith("vae.") for t in full.table[full.table["delta_m"] > 0]["tensor"])


def test_a_pipeline_without_weights_is_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"scheduler": ["diffusers", "DDPMScheduler"]}))
    (tmp_path / "scheduler").mkdir()
    with pytest.raises(InputError, match="without component weights"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("kwargs", [{"preset": "attn-mlp"}, {"preset": "attn-mlp", "dora_wd": True},
                                    {"preset": "unet-convblock-only"}])
def test_kohya_file_on_a_pipeline_matches_lycoris_merge(tmp_path, kwargs):
    pytest.importorskip("lycoris")
    case = make_kohya_case(tmp_path, **kwargs)
    a = _assert_same_changes(case.base, case.lora, case.merged)
    assert not a.meta.skipped or all("run" not in s for s in a.meta.skipped)


@pytest.mark.parametrize("metadata, message", [("{not json", "not valid JSON"), ("[1]", "not a JSON object"),
                                               ("[" * 100_000 + "]" * 100_000, "nested deeper"),
                                               ('{"unet.r": 0, "unet.peft_type": "LORA"}', "r is 0")])
def test_bad_lora_metadata_is_an_input_error(tmp_path, metadata, message):
    from safetensors.torch import load_file, save_file

    case = make_case(tmp_path)
    weights = case.lora / "pytorch_lora_weights.safetensors"
    save_file(load_file(weights), str(weights), metadata={"lora_adapter_metadata": metadata})
    with pytest.raises(InputError, match=message):
        open_source(str(case.lora), open_checkpoint(case.base))


def test_precision_variants_beside_the_weights_are_not_read_as_shards(tmp_path):
    """diffusers' save_pretrained(variant="fp16") writes diffusion_pytorch_model.fp16.safetensors."""
    import tiny_diffusers

    case = make_case(tmp_path)
    unet, _, _ = tiny_diffusers.components()
    unet.half().save_pretrained(str(case.base / "unet"), variant="fp16")
    assert (case.base / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    ckpt = open_checkpoint(case.base)
    unet_dtypes = {i.dtype for n, i in ckpt.tensors.items() if n.startswith("unet.")}
    assert unet_dtypes == {"F32"}


def _as_single_file(pipeline, path):
    """The pipeline's UNet and text encoder in one file under the parents of the original (LDM)
    single-file layout, ``model.diffusion_model.`` and ``cond_stage_model.transformer.text_model.``;
    module names stay as they are (as they do for SDXL's UNet and the CLIP encoders)."""
    from safetensors.torch import load_file, save_file

    parents = {"unet": "model.diffusion_model.", "text_encoder": "cond_stage_model.transformer.text_model."}
    tensors = {}
    for component, parent in parents.items():
        folder = pipeline / component
        for f in folder.glob("*.safetensors"):
            tensors.update({parent + k: v for k, v in load_file(f).items()})
    save_file(tensors, str(path))
    return path


def test_kohya_file_on_a_single_file_checkpoint_matches_lycoris_merge(tmp_path):
    pytest.importorskip("lycoris")
    case = make_kohya_case(tmp_path, preset="attn-mlp")
    base = _as_single_file(case.base, tmp_path / "sd.safetensors")
    merged = _as_single_file(case.merged, tmp_path / "sd-merged.safetensors")
    a = _assert_same_changes(base, case.lora, merged)
    assert {t.split(".")[0] for t in a.table["tensor"]} == {"model", "cond_stage_model"}
