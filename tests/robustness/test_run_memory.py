"""A run directory of many checkpoints streams in memory bounded by the block size, not by the
number of checkpoints (each target's rows are read into one shared buffer in turn)."""

from __future__ import annotations

import os

import torch

from ckpt_helpers import write_checkpoint
from limited import run_limited

CHECKPOINTS = 120
BLOCK_MB = 8


def test_many_checkpoints_share_one_read_buffer(tmp_path):
    w = torch.randn(1024, 2048, generator=torch.Generator().manual_seed(0))   # 8 MiB of fp32: one block
    base = write_checkpoint(tmp_path / "base", {"model.layers.0.self_attn.q_proj.weight": w})
    first = write_checkpoint(tmp_path / "ft", {"model.layers.0.self_attn.q_proj.weight": w + 1e-3})
    run = tmp_path / "run"
    for step in range(1, CHECKPOINTS + 1):   # links to one file: the test writes 16 MiB, the run reads 1 GB
        d = run / f"checkpoint-{step}"
        d.mkdir(parents=True)
        for name in os.listdir(first):
            os.symlink(first / name, d / name)
    # Buffers per checkpoint would need CHECKPOINTS x BLOCK_MB = 960 MB, past the 600 MB cap.
    ((code, _, err),) = run_limited([["compare", str(base), str(run), "-q", "--block-mb", str(BLOCK_MB),
                                      "--csv", str(tmp_path / "t.csv")]])
    assert code == 0, err
    assert len((tmp_path / "t.csv").read_text().splitlines()) == CHECKPOINTS + 1
