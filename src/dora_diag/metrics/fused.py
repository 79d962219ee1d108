"""The one-pass block kernel (``_fused.c``), where it was built at install time.

``sums`` returns None wherever the fast path does not apply: the extension could not be
built (no C compiler when installing), it is switched off (``DORA_DIAG_FAST_KERNEL=0``, or
``ENABLED = False`` in tests), or the block is not a pair of C-contiguous CPU arrays of
fp32/bf16/fp16 (in any pairing; numpy arrays or torch tensors, ``arrays``). ``kernels.block_sums``
then runs the unfused kernel (the torch kernel's arithmetic, on numpy arrays for numpy blocks),
which gives the same numbers to fp32 rounding.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os

from ..arrays import NUMPY, ops_of


def _load():
    """(module, None), or (None, why it is not there)."""
    name = f"{__package__}._fused"
    if importlib.util.find_spec(name) is None:
        return None, f"{name} was not built (no C compiler at install time?)"
    try:
        return importlib.import_module(name), None
    except ImportError as e:   # built, but does not load here (another Python, a missing symbol)
        return None, f"{name} does not load: {e}"


_fused, _MISSING = _load()
log = logging.getLogger(__name__)

ENABLED = os.environ.get("DORA_DIAG_FAST_KERNEL", "1") != "0"
AVAILABLE = _fused is not None
# Element types the C kernel reads, by their name on either side (numpy keeps bf16 as its uint16 bits).
_CODES = {"float32": 0, "torch.float32": 0, "uint16": 1, "torch.bfloat16": 1, "float16": 2, "torch.float16": 2}
_said = False


def _say_once() -> None:
    """One debug line (shown with ``dora-diag --debug``) on why the fallback runs."""
    global _said
    if not _said:
        _said = True
        why = _MISSING if not AVAILABLE else "switched off (DORA_DIAG_FAST_KERNEL=0)"
        log.debug("one-pass block kernel: %s; using the unfused kernel (the torch kernel's arithmetic, on numpy arrays "
                  "on CPU; slower, same results)", why)


def sums(a, c, axis: str):
    """fp64 (3, channels): ``|a|^2``, ``<a, d>``, ``|d|^2`` per channel of a block pair of shape
    (rows, cols), ``d = c - a`` in fp32; channels are rows (``axis="out"``, reducing over dim 1)
    or columns (``"in"``, over dim 0). An array of ``a``'s kind; None where the fast path does
    not apply (module doc)."""
    if not (ENABLED and AVAILABLE):
        _say_once()
        return None
    ops = ops_of(a)
    a_code, c_code = _CODES.get(str(a.dtype)), _CODES.get(str(c.dtype))
    if (a_code is None or c_code is None or ops_of(c) is not ops or a.shape != c.shape or a.ndim != 2
            or not ops.c_contiguous(a) or not ops.c_contiguous(c)):
        return None
    rows, cols = a.shape
    out = NUMPY.zeros((3, rows if axis == "out" else cols), NUMPY.float64)
    _fused.sums(ops.data_ptr(a), ops.data_ptr(c), rows, cols, a_code, c_code, axis == "out", out.ctypes.data)
    return out if ops is NUMPY else ops.from_numpy(out)
