"""The one-pass C kernel: its sums against float64 references, and where it stands aside."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from dora_diag.metrics import fused
from dora_diag.metrics.kernels import block_sums

needs_extension = pytest.mark.skipif(not fused.AVAILABLE, reason="the one-pass kernel extension is not built here")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def reference_sums(a: torch.Tensor, c: torch.Tensor, axis: str) -> tuple[torch.Tensor, torch.Tensor]:
    """fp64 sums of the fp32 terms (d = c - a rounded to fp32, as the kernel defines it) and the
    sums of their absolute values, which bound the rounding error: both (3, channels)."""
    a32 = a.float()
    d = (c.float() - a32).double()
    a64 = a32.double()
    terms = torch.stack([a64 * a64, a64 * d, d * d])
    dim = 2 if axis == "out" else 1
    return terms.sum(dim), terms.abs().sum(dim)


@needs_extension
# Same types, and a fine-tuned copy kept in another precision than its base.
@pytest.mark.parametrize("dtype,c_dtype", [(dt, dt) for dt in DTYPES] + [
    (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16), (torch.float16, torch.float32),
    (torch.bfloat16, torch.float16)])
@pytest.mark.parametrize("axis", ["out", "in"])
# Shapes across the kernel's seams: lane remainders (cols % 16), more than one fp32 flush per
# channel (cols > 16 * 256 on rows, rows > 256 on columns), partial column tiles (cols % 2048).
@pytest.mark.parametrize("shape", [(1, 1), (3, 15), (7, 17), (5, 4096 + 16 * 256 + 3), (600, 300), (257, 513),
                                   (300, 2048 + 5)])
def test_sums_match_float64_reference(dtype, c_dtype, axis, shape):
    g = torch.Generator().manual_seed(7)
    a = (torch.randn(shape, generator=g) * 3).to(dtype)
    c = (a.double() + 1e-2 * torch.randn(shape, generator=g, dtype=torch.float64)).to(c_dtype)
    got = fused.sums(a, c, axis)
    ref, scale = reference_sums(a, c, axis)
    assert got is not None and got.dtype == torch.float64
    # fp32 products, each partial sum of at most 256 terms: error well below 1e-5 of the scale.
    assert float(((got - ref).abs() / scale.clamp_min(1e-300)).max()) < 1e-5


@needs_extension
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_half_precision_value_converts_exactly(dtype):
    """All 65536 bit patterns (subnormals, ±0, ±Inf, NaN), one per row, against c = 0: each
    row's sums are a^2, -a^2 and a^2 in fp32, exactly as torch converts and squares them."""
    a = torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16).view(dtype).reshape(-1, 1)
    got = fused.sums(a, torch.zeros_like(a), "out")
    sq = a.float().square().double().flatten()
    torch.testing.assert_close(got, torch.stack([sq, -sq, sq]), rtol=0, atol=0, equal_nan=True)


@needs_extension
def test_identical_blocks_give_exact_zero_differences():
    a = torch.randn(9, 1000, dtype=torch.bfloat16)
    for axis in ("out", "in"):
        got = fused.sums(a, a.clone(), axis)
        assert (got[1:] == 0).all() and (got[0] > 0).all()


@needs_extension
@pytest.mark.parametrize("axis", ["out", "in"])
def test_block_sums_takes_the_one_pass_kernel_and_agrees_with_the_fallback(axis, monkeypatch):
    g = torch.Generator().manual_seed(8)
    a = torch.randn(40, 600, generator=g).bfloat16()
    c = (a.float() + 1e-3 * torch.randn(40, 600, generator=g)).bfloat16()
    real, taken = fused.sums, []
    monkeypatch.setattr(fused, "sums", lambda *args: taken.append(real(*args) is not None) or real(*args))
    fast = block_sums(a, c, axis)
    monkeypatch.setattr(fused, "ENABLED", False)
    slow = block_sums(a, c, axis)
    assert taken == [True, False]
    for name in ("a2", "c2", "d2"):
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-5, atol=0)


@pytest.mark.parametrize("case", ["float64", "float64 and bf16", "strided", "float8"])
def test_other_blocks_fall_back(case):
    """Blocks the C kernel does not read (other dtypes, views with strides) go to torch."""
    a = torch.randn(6, 32)
    c = a + 0.1
    a, c = {"float64": (a.double(), c.double()), "float64 and bf16": (a.bfloat16(), c.double()), "strided": (a[:, ::2], c[:, ::2]),
            "float8": (a.to(torch.float8_e4m3fn), c.to(torch.float8_e4m3fn))}[case]
    assert fused.sums(a, c, "out") is None


def test_the_fallback_says_why_once_at_debug_level(monkeypatch, caplog):
    monkeypatch.setattr(fused, "ENABLED", False)
    monkeypatch.setattr(fused, "_said", False)
    a = torch.randn(4, 8)
    with caplog.at_level(logging.DEBUG, logger=fused.__name__):
        block_sums(a, a + 1)
        block_sums(a, a + 2)
    lines = [r.getMessage() for r in caplog.records if r.name == fused.__name__]
    assert len(lines) == 1 and "torch kernel" in lines[0]


@pytest.mark.parametrize("switched_off", [True, False])
def test_debug_says_once_that_the_fallback_runs(make_pair, switched_off):
    """``dora-diag --debug compare`` prints one line about the torch kernel, and only when it runs."""
    b, f, _, _ = make_pair(layers=2)
    env = {**os.environ, "DORA_DIAG_FAST_KERNEL": "0" if switched_off else "1"}
    done = subprocess.run([sys.executable, "-m", "dora_diag", "--debug", "compare", str(b), str(f), "-q"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "torch kernel" in line]
    expected = 1 if switched_off or not fused.AVAILABLE else 0
    assert len(lines) == expected and all(line.startswith("dora-diag: debug: ") for line in lines)


def test_a_missing_extension_is_named_in_the_reason(monkeypatch):
    monkeypatch.setattr(fused.importlib.util, "find_spec", lambda name: None)
    module, why = fused._load()
    assert module is None and why == "dora_diag.metrics._fused was not built (no C compiler at install time?)"
