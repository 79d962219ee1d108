"""Every kernel test runs four times: with the one-pass C kernel and with the unfused fallback,
each on torch tensors and on numpy arrays (the CPU engine's, ``kernel_helpers.ARRAYS``)."""

from __future__ import annotations

import pytest

import kernel_helpers
from dora_diag.metrics import fused


@pytest.fixture(scope="module", params=[(True, "torch"), (True, "numpy"), (False, "torch"), (False, "numpy")],
                ids=["one-pass-torch", "one-pass-numpy", "unfused-torch", "unfused-numpy"])
def fast_path(request):
    """Module-scoped (hypothesis refuses function-scoped fixtures): switches the fast path and
    the arrays for the module's tests; the one-pass variants are skipped where the extension
    was not built."""
    fast, arrays = request.param
    if fast and not fused.AVAILABLE:
        pytest.skip("the one-pass kernel extension is not built here (no C compiler at install?)")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fused, "ENABLED", fast)
        m.setattr(kernel_helpers, "ARRAYS", arrays)
        yield fast
