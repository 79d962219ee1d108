"""Every default is declared once: the commands' option defaults equal the library's."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from dora_diag.analysis.compare import compare
from dora_diag.analysis.verdict import verdict
from dora_diag.cli.main import cli
from dora_diag.options import CHECK_TRIAL_SEEDS, DEFAULT_BLOCK_BYTES
from dora_diag.train.config import TrainConfig
from dora_diag.demo import DemoConfig
from dora_diag.train.trial import run_trial


def _option_defaults(command: str) -> dict:
    return {p.name: p.default for p in cli.commands[command].params}


def _signature_defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize("command", ["compare", "check"])
def test_compare_options_match_compare(command):
    cli_d, lib = _option_defaults(command), _signature_defaults(compare)
    for name in ("axis", "device"):
        assert cli_d[name] == lib[name]
    assert cli_d["block_mb"] * 2**20 == lib["block_bytes"] == DEFAULT_BLOCK_BYTES


def test_check_thresholds_match_verdict():
    cli_d, lib = _option_defaults("check"), _signature_defaults(verdict)
    assert (cli_d["min_r"], cli_d["significance"], cli_d["min_units"]) == (lib["min_r"], lib["alpha"], lib["min_units"])
    assert cli_d["trial_seeds"] == _signature_defaults(run_trial)["seeds"] == CHECK_TRIAL_SEEDS


def test_train_options_match_train_config():
    cli_d = _option_defaults("train")
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    shared = set(cli_d) & set(fields)
    assert len(shared) >= 15
    for name in shared:
        value = cli_d[name]
        expected = fields[name]
        if isinstance(expected, tuple):
            expected = ",".join(expected)
        assert value == expected, name


def test_demo_options_match_demo_config():
    cli_d, fields = _option_defaults("demo"), {f.name: f.default for f in dataclasses.fields(DemoConfig)}
    for name in set(cli_d) & set(fields):
        assert cli_d[name] == fields[name], name
