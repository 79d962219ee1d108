"""Every kernel test runs twice: with the one-pass C kernel and with the torch fallback."""

from __future__ import annotations

import pytest

from dora_diag.metrics import fused


@pytest.fixture(scope="module", params=[True, False], ids=["one-pass", "torch"])
def fast_path(request):
    """Module-scoped (hypothesis refuses function-scoped fixtures): switches the fast path for
    the module's tests; the one-pass variant is skipped where the extension was not built."""
    if request.param and not fused.AVAILABLE:
        pytest.skip("the one-pass kernel extension is not built here (no C compiler at install?)")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fused, "ENABLED", request.param)
        yield request.param
