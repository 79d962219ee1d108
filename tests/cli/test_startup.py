"""Start-up: a CPU compare, check or verify of safetensors checkpoints never imports torch
(~2 s), and the statistics and report libraries load only for the outputs that need them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

HEAVY = ("torch", "scipy", "plotly")
# Runs the CLI in a fresh interpreter and prints, last, which of HEAVY it left loaded.
SCRIPT = """
import json, sys
from dora_diag.cli import main
try:
    main(sys.argv[1:])
finally:
    print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
""".format(heavy=HEAVY)


def _loaded(*argv: str, codes: tuple[int, ...] = (0,)) -> list[str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode in codes, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quiet_compare_to_csv_loads_none_of_them(make_pair, tmp_path, dtype):
    b, f, _, _ = make_pair(layers=2, dtype=dtype)
    assert _loaded("compare", str(b), str(f), "-q", "--device", "cpu", "--csv", str(tmp_path / "t.csv")) == []


def test_compare_with_its_summary_and_check_load_none_of_them(make_pair, tmp_path):
    """The summary's p-values come from ``analysis.student_t``, not scipy (~0.5 s to import)."""
    b, f, _, _ = make_pair(layers=4)
    assert _loaded("compare", str(b), str(f), "--device", "cpu", "--json", str(tmp_path / "c.json")) == []
    assert _loaded("check", str(b), str(f), "--device", "cpu") == []


def test_verify_without_an_adapter_loads_no_torch(make_pair):
    """Exit 3: the merged checkpoint changed (that is what is asked without an adapter)."""
    b, f, _, _ = make_pair(layers=2, dtype=torch.bfloat16)
    assert _loaded("verify", str(b), str(f), codes=(0, 3)) == []
