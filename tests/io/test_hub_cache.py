"""Model ids resolved through a local Hugging Face cache laid out as huggingface_hub lays it out
(blobs, snapshots of symlinks, refs/main); huggingface_hub's own offline lookup is the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import dora_diag
from ckpt_helpers import write_checkpoint
from hub_helpers import COMMIT, cache_model
from dora_diag.errors import InputError
from dora_diag.io.checkpoint import adapter_base_id, open_checkpoint
from dora_diag.io.hub_cache import hub_cache, looks_like_repo_id, resolve_repo_id

huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture
def cached(tmp_path, monkeypatch):
    weights = {"layers.0.q_proj.weight": torch.randn(6, 4), "layers.1.q_proj.weight": torch.randn(6, 4)}
    local = write_checkpoint(tmp_path / "local", weights)
    files = {"model.safetensors": (local / "model.safetensors").read_bytes(), "config.json": b"{}"}
    cache = tmp_path / "hub"
    snapshot = cache_model(cache, "org/tiny", files)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return cache, snapshot, weights


def test_resolution_agrees_with_huggingface_hub(cached):
    cache, snapshot, _ = cached
    theirs = huggingface_hub.try_to_load_from_cache("org/tiny", "model.safetensors", cache_dir=str(cache))
    assert resolve_repo_id("org/tiny") == snapshot == Path(theirs).parent
    (repo,) = huggingface_hub.scan_cache_dir(cache).repos
    assert repo.repo_id == "org/tiny" and {r.commit_hash for r in repo.revisions} == {COMMIT}


def test_an_id_works_as_base(cached, tmp_path):
    _, _, weights = cached
    ckpt = open_checkpoint("org/tiny")
    assert ckpt.path == "org/tiny" and set(ckpt.tensors) == set(weights)
    ft = write_checkpoint(tmp_path / "ft", {k: v + 0.1 for k, v in weights.items()})
    assert len(dora_diag.compare("org/tiny", ft).table) == 2


def test_an_id_not_in_the_cache_names_the_id_and_the_cache(cached):
    cache, _, _ = cached
    with pytest.raises(InputError, match=f"org/other: no such file or directory, nor a model in the Hugging Face cache {cache}"):
        open_checkpoint("org/other")


def test_a_dangling_ref_is_refused(cached):
    cache, _, _ = cached
    (cache / "models--org--tiny" / "refs" / "main").write_text("f" * 40)
    with pytest.raises(InputError, match="points at no snapshot"):
        resolve_repo_id("org/tiny")


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache() == tmp_path / "home" / "hub"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"


def test_paths_are_not_ids():
    assert looks_like_repo_id("org/model") and looks_like_repo_id("gpt2")
    assert not any(looks_like_repo_id(p) for p in ("/abs/path", "a/b/c", "../x", "w.safetensors", "org/../x"))


def test_adapter_base_id(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/tiny"}))
    save_file({}, str(tmp_path / "adapter_model.safetensors"))
    assert adapter_base_id(tmp_path) == adapter_base_id(tmp_path / "adapter_model.safetensors") == "org/tiny"
    assert adapter_base_id(tmp_path / "nowhere") is None
