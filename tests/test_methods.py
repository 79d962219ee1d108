"""The methods table: the one list of training methods that the CLI, the configs, injection,
the PEFT exporter and the reading of a run's method all use, and facts that agree with the layer
classes it names."""

from __future__ import annotations

import pytest
from torch import nn

from dora_diag.adapters.inject import AdapterConfig, adapter_layers, apply_adapters, layer_class
from dora_diag.adapters.layers import AdapterLayer, MagnitudeOnlyLinear
from dora_diag.cli.main import cli
from dora_diag.errors import InputError
from dora_diag.io import method as run_methods
from dora_diag.methods import ADAPTER_METHODS, METHODS, TRAIN_METHODS, method, peft_method
from dora_diag.train.config import TrainConfig


def test_every_consumer_reads_the_table():
    train_option = next(p for p in cli.commands["train"].params if p.name == "method")
    assert tuple(train_option.type.choices) == TRAIN_METHODS == tuple(METHODS)
    assert all(f"{name} = " in train_option.help for name in METHODS)
    assert set(TRAIN_METHODS) <= set(run_methods.METHODS)
    assert set(run_methods.LORA_FAMILY) == {"lora", "rslora"}
    assert ADAPTER_METHODS == tuple(n for n in METHODS if n != "ft")


def test_unknown_names_are_input_errors_naming_the_choices():
    with pytest.raises(InputError, match="unknown method 'sgd'; choose one of ft, lora"):
        method("sgd")
    with pytest.raises(InputError, match="unknown adapter method 'ft'; choose one of lora"):
        method("ft", adapters_only=True)
    with pytest.raises(InputError, match="unknown method"):
        TrainConfig(out="x", method="sgd").resolved()


def test_peft_native_rows():
    assert (peft_method(False), peft_method(True)) == ("lora", "dora")


@pytest.mark.parametrize("name", ADAPTER_METHODS)
def test_row_facts_match_the_layers_it_builds(name):
    row = METHODS[name]
    cls = layer_class(name)
    assert issubclass(cls, AdapterLayer) and cls.has_magnitude == row.magnitude
    assert not row.frozen_magnitude or row.magnitude
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4))
    apply_adapters(model, AdapterConfig(method=name, rank=2, targets=("0", "1")))
    layers = adapter_layers(model)
    # a reduced-granularity method without magnitude-only patterns gives every target a magnitude only
    assert {type(layer) for layer in layers.values()} == {MagnitudeOnlyLinear if row.reduced_granularity else cls}
    for layer in layers.values():
        assert layer.peft_config_fields() == {"use_dora": row.magnitude}
        if row.magnitude:
            assert layer.magnitude.requires_grad == (row.trains_magnitude or layer.magnitude_only)
    adapter = TrainConfig(out="x", method=name).adapter_config()
    assert adapter.method == name and bool(adapter.magnitude_only) == row.reduced_granularity


def test_full_fine_tuning_trains_no_adapter():
    assert not METHODS["ft"].adapter and TrainConfig(out="x", method="ft").adapter_config() is None
