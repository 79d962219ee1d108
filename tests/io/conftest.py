"""Fixtures for adapter tests; the models and the oracle live in ``tiny_peft``."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

from tiny_peft import AdapterCase, save_adapter_case  # noqa: E402


@pytest.fixture
def make_adapter(tmp_path):
    counter = iter(range(100))

    def make(model_name: str, seed: int = 0, **lora_kwargs) -> AdapterCase:
        d = tmp_path / f"case{next(counter)}"
        d.mkdir()
        return save_adapter_case(d, model_name, seed, **lora_kwargs)

    return make
