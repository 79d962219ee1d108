"""Fixtures for the trainer tests."""

import pytest
import torch

from dora_diag.train.model import BuiltinConfig, BuiltinTransformer, save_full_model

SMALL = BuiltinConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(autouse=True, scope="module")
def _tiny_models_on_one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A small random builtin-architecture base (2 layers, hidden 32) saved as a model directory."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    save_full_model(BuiltinTransformer(SMALL), d)
    return d
