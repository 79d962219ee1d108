"""The process-level settings the library applies itself (not only the CLI)."""

from __future__ import annotations

import sys

import pytest

from dora_diag import runtime
from dora_diag.errors import InputError


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")
def test_compare_tunes_the_allocator_for_notebook_users_too(make_pair, monkeypatch):
    import dora_diag

    calls = []
    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: type("libc", (), {"mallopt": lambda *a: calls.append(a)}))
    b, f, _, _ = make_pair()
    dora_diag.compare(b, f)
    dora_diag.compare(b, f)
    assert calls == [(-3, 64 << 20), (-1, 256 << 20)]   # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD; once per process


def test_device_choice():
    assert runtime.resolve_device("cpu").type == "cpu"
    with pytest.raises(InputError, match="device must be one of"):
        runtime.resolve_device("tpu")


def _matmul_error() -> float:
    """Relative error of an fp32 matmul against float64: ~5e-7 at fp32, ~2e-3 in bf16."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 1024, generator=g), torch.randn(1024, 64, generator=g)
    ref = a.double() @ b.double()
    return float(((a @ b).double() - ref).abs().max() / ref.abs().max())


def test_exact_float32_undoes_a_lowered_legacy_setting_and_restores_it():
    """The lowered matmul really is bf16 on CPUs with AMX/AVX512-BF16 (CI's); elsewhere the
    setting alone is checked."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with runtime.exact_float32():
            assert _matmul_error() < 1e-5
        assert torch.get_float32_matmul_precision() == "medium"   # and the legacy getter still works
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.skipif(not hasattr(__import__("torch").backends.mkldnn, "matmul"), reason="torch < 2.9: no per-backend API")
def test_exact_float32_restores_the_per_backend_setting():
    import torch

    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        with runtime.exact_float32():
            assert matmul.fp32_precision == "ieee" and _matmul_error() < 1e-5
        assert matmul.fp32_precision == "bf16"
    finally:
        matmul.fp32_precision = before
