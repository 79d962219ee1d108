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
