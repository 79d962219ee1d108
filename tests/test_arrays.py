"""The array layer's conversions against torch's own: every bf16 and fp8 bit pattern."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora_diag.arrays import NUMPY, fp8_table, ieee, ops_for, ops_of, torch_ops


@pytest.mark.parametrize("name,dtype", [("F8_E4M3", torch.float8_e4m3fn), ("F8_E5M2", torch.float8_e5m2)])
def test_fp8_tables_decode_every_byte_as_torch_does(name, dtype):
    ref = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).float().numpy()
    got = fp8_table(name)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)   # NaN where torch has NaN, signed zeros, Inf (e5m2)
    assert np.array_equal(np.signbit(got), np.signbit(ref))


def test_fp8_bytes_are_decoded_when_viewed():
    q = torch.randn(3, 5).to(torch.float8_e4m3fn)
    buf = q.view(torch.uint8).numpy().reshape(-1).copy()
    np.testing.assert_array_equal(NUMPY.view(buf, "F8_E4M3", (3, 5)), q.float().numpy())


def test_bf16_bits_widen_exactly_for_every_pattern():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ref = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(NUMPY.f32(bits), ref)
    with ieee():   # NaN patterns: signalling ones warn when widened
        np.testing.assert_array_equal(NUMPY.f64(bits), ref.astype(np.float64))
    out = np.empty((2, 1 << 16), dtype=np.float32)[:, ::1]
    NUMPY.copy_into(out[1], bits)   # into a row of a larger scratch, as block_sums does
    np.testing.assert_array_equal(out[1], ref)


def test_bf16_crosses_to_torch_and_back_without_copies():
    t = torch.randn(4, 6).bfloat16()
    n = torch_ops().numpy(t)
    assert n.dtype == np.uint16 and np.array_equal(NUMPY.f32(n), t.float().numpy())
    back = torch_ops().from_numpy(n)
    assert back.dtype == torch.bfloat16 and torch.equal(back, t)
    assert back.data_ptr() == n.ctypes.data


def test_ops_follow_the_device_name_or_the_array():
    assert ops_for("cpu") is NUMPY and ops_of(np.zeros(1)) is NUMPY
    assert ops_for(torch.device("cpu")) is torch_ops() and ops_of(torch.zeros(1)) is torch_ops()
    assert ops_for("cuda:0") is torch_ops()
