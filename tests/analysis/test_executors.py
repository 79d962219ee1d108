"""Executors without Ray: row-range tasks recombine bit for bit into whole-tensor results, the
split follows the block and byte sizes, and unknown or unavailable executors are one-line errors."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import pytest
import torch

from ckpt_helpers import write_checkpoint
from dora_diag.analysis.executors import Job, make_executor, open_job
from dora_diag.analysis.executors.tasks import RangeResult, merge, run_range, split
from dora_diag.analysis.stream import Streamer, block_rows
from dora_diag.errors import InputError

FIELDS = ("dm", "dd", "m0", "zero", "refine", "nonfinite")


@pytest.fixture
def awkward(tmp_path):
    """Rows that take every path: zeroed (c2 re-summed), radial (refined), NaN, a resized vocab."""
    g = torch.Generator().manual_seed(1)
    base = {"model.embed_tokens.weight": torch.randn(37, 16, generator=g),
            "model.layers.0.self_attn.q_proj.weight": torch.randn(45, 16, generator=g).bfloat16(),
            "model.layers.0.mlp.down_proj.weight": torch.randn(16, 40, generator=g)}
    ft = {n: (w.double() + 1e-3 * torch.randn(w.shape, generator=g, dtype=torch.float64)).to(w.dtype)
          for n, w in base.items()}
    ft["model.embed_tokens.weight"] = torch.cat([ft["model.embed_tokens.weight"], torch.randn(3, 16, generator=g)])
    q = ft["model.layers.0.self_attn.q_proj.weight"]
    q[2] = 0
    q[20:23] = base["model.layers.0.self_attn.q_proj.weight"][20:23] * 1.25
    ft["model.layers.0.mlp.down_proj.weight"][7, 3] = float("nan")
    cfg = {"model_type": "llama", "hidden_size": 16, "num_attention_heads": 4}
    return write_checkpoint(tmp_path / "base", base, cfg), write_checkpoint(tmp_path / "ft", ft, cfg)


@pytest.mark.parametrize("axis", ["out", "in"])
@pytest.mark.parametrize("task_bytes", [1, 700, 1 << 20])
def test_ranges_recombine_bit_for_bit(awkward, axis, task_bytes):
    job = Job(str(awkward[0]), (str(awkward[1]),), axis=axis, block_bytes=200)
    with ExitStack() as stack:
        opened = open_job(job, stack)
        streamer = Streamer(opened.reader, torch.device("cpu"), axis, job.block_bytes)
        tasks = split(opened.plan, job, task_bytes)
        seen = set()
        for i, tp in enumerate(opened.plan.tensors):
            whole = streamer.run(tp)
            pieces = [RangeResult(run_range(streamer, tp, t), 0, "cpu") for t in tasks if t.index == i]
            for w, m in zip(whole, merge(tp, pieces), strict=True):
                for f in FIELDS:
                    torch.testing.assert_close(getattr(m.changes, f), getattr(w.changes, f), rtol=0, atol=0,
                                               equal_nan=True, msg=f"{tp.info.name} {f}")
                    seen |= {f} if bool(getattr(w.changes, f).any()) else set()
                assert m.nonfinite_in == w.nonfinite_in
    assert ({"zero", "refine", "nonfinite"} if axis == "out" else {"nonfinite"}) <= seen   # every path taken


def test_split_covers_every_row_in_aligned_ranges_of_about_the_target(awkward):
    job = Job(str(awkward[0]), (str(awkward[1]),), block_bytes=200)
    with ExitStack() as stack:
        plan = open_job(job, stack).plan
        tasks = split(plan, job, 700)
        for i, tp in enumerate(plan.tensors):
            mine = [t for t in tasks if t.index == i]
            assert [t.start for t in mine] == [0] + [t.stop for t in mine[:-1]] and mine[-1].stop == tp.info.shape[0]
            step = block_rows(tp.info.row_bytes, job.block_bytes)
            assert all(t.start % step == 0 for t in mine)
            row_bytes = 2 * tp.info.row_bytes   # the base and one full checkpoint
            assert all(t.nbytes == (t.stop - t.start) * row_bytes for t in mine)
            assert all(t.nbytes <= max(700, step * row_bytes) for t in mine)
        assert len(split(plan, job, 1 << 30)) == len(plan.tensors)


def test_unknown_executor_is_an_input_error():
    with pytest.raises(InputError, match="executor must be one of local, ray"):
        make_executor("dask")


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError
    with pytest.raises(InputError, match=r'pip install "dora-diag\[ray\]"'):
        make_executor("ray")
