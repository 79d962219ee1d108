"""The base of a run given alone: its adapters' base_model_name_or_path, through a local path or a
Hugging Face cache laid out as huggingface_hub lays it out (no network)."""

from __future__ import annotations

import json

import pytest
import torch

from ckpt_helpers import write_checkpoint
from dora_diag.errors import InputError
from dora_diag.io.run_base import base_of_run
from hub_helpers import cache_model


def _adapter(directory, base_id):
    """A minimal PEFT adapter directory naming ``base_id`` (``None``: names no base)."""
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "base_model_name_or_path": base_id}))
    write_checkpoint(directory, {}).joinpath("model.safetensors").rename(directory / "adapter_model.safetensors")
    return directory


@pytest.fixture
def cache(tmp_path, monkeypatch):
    local = write_checkpoint(tmp_path / "local", {"layers.0.q_proj.weight": torch.randn(4, 4)})
    snapshot = cache_model(tmp_path / "hub", "org/tiny", {"model.safetensors": (local / "model.safetensors").read_bytes()})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    return snapshot


def test_an_id_resolves_to_its_cached_snapshot(tmp_path, cache):
    assert base_of_run(str(_adapter(tmp_path / "a", "org/tiny"))) == str(cache)


def test_a_run_directory_resolves_through_its_checkpoints(tmp_path, cache):
    for step in (1, 2):
        _adapter(tmp_path / "run" / f"checkpoint-{step}", "org/tiny")
    assert base_of_run(f"L={tmp_path / 'run'}") == str(cache)


def test_a_local_path_is_used_as_is(tmp_path, cache):
    assert base_of_run(str(_adapter(tmp_path / "a", "local"))) == "local"


def test_a_model_has_no_base_to_resolve(tmp_path, cache):
    assert base_of_run("local") is None and base_of_run("org/tiny") is None


@pytest.mark.parametrize("base_id, message", [
    ("org/absent", "org/absent: no such file or directory, nor a model in the Hugging Face cache {hub}"),
    (None, "does not name its base model"),
    ("/no/such/dir/", "is neither an existing path nor a model id"),
])
def test_unresolvable_bases_are_input_errors(tmp_path, cache, base_id, message):
    with pytest.raises(InputError) as e:
        base_of_run(str(_adapter(tmp_path / "a", base_id)))
    assert message.format(hub=tmp_path / "hub") in str(e.value)


def test_a_run_of_full_checkpoints_needs_its_base(tmp_path, cache):
    for step in (1, 2):
        write_checkpoint(tmp_path / "run" / f"checkpoint-{step}", {"layers.0.q_proj.weight": torch.randn(4, 4)})
    with pytest.raises(InputError, match="a run of full checkpoints has no base to look up"):
        base_of_run(str(tmp_path / "run"))


def test_checkpoints_naming_different_bases_are_refused(tmp_path, cache):
    _adapter(tmp_path / "run" / "checkpoint-1", "org/tiny")
    _adapter(tmp_path / "run" / "checkpoint-2", "local")
    with pytest.raises(InputError, match="different base models"):
        base_of_run(str(tmp_path / "run"))


def test_a_lycoris_file_names_no_base(tmp_path):
    pytest.importorskip("lycoris")
    from tiny_lycoris import make_case

    case = make_case(tmp_path)
    with pytest.raises(InputError, match="does not name its base model.*give the base first"):
        base_of_run(str(case.adapter))
    assert base_of_run(str(case.base)) is None
