"""The few array operations the streaming engine needs, for numpy arrays and for torch tensors.

The engine (reader views, fp8 scales, block kernels, streamer) is written once against ``Ops``;
``ops_for(device)`` picks numpy on CPU, so a CPU comparison never imports torch (~2 s of start-up),
and torch for CUDA. ``ops_of(x)`` picks by the array's own type, so the kernels also take torch
tensors on CPU (adapters that compute rows with torch, tests).

numpy has no bfloat16 or float8. On the numpy side a bf16 array is its raw ``uint16`` bits (the
one-pass C kernel reads them as stored; ``f32`` widens them exactly, ``bits << 16`` viewed as
fp32), and fp8 bytes are decoded to fp32 as they are read, through a 256-entry table per format.
No streamed tensor is a uint16 integer (non-float tensors are never measured).
"""

from __future__ import annotations

import functools

import numpy as np

# safetensors dtype -> numpy dtype of the values as held on the numpy side (fp8: decoded, ``fp8_table``)
NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
                "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
# fp8 formats: (exponent bits, exponent bias, whether the all-ones exponent is Inf/NaN as in IEEE)
_FP8 = {"F8_E4M3": (4, 7, False), "F8_E5M2": (5, 15, True)}


@functools.cache
def fp8_table(dtype: str) -> np.ndarray:
    """fp32 value of each of the 256 bytes of fp8 ``dtype`` (``F8_E4M3`` is OCP's e4m3fn:
    no Inf, only S.1111.111 is NaN; ``F8_E5M2`` follows IEEE, with Inf and NaN)."""
    exp_bits, bias, ieee = _FP8[dtype]
    man_bits = 7 - exp_bits
    b = np.arange(256)
    exp, man = (b >> man_bits) & ((1 << exp_bits) - 1), b & ((1 << man_bits) - 1)
    normal = (1 + man / (1 << man_bits)) * np.exp2(exp - bias)
    subnormal = man / (1 << man_bits) * np.exp2(1 - bias)
    value = np.where(exp == 0, subnormal, normal)
    top = exp == (1 << exp_bits) - 1
    if ieee:
        value = np.where(top, np.where(man == 0, np.inf, np.nan), value)
    else:
        value = np.where(top & (man == (1 << man_bits) - 1), np.nan, value)
    return np.where(b & 0x80, -value, value).astype(np.float32)


class NumpyOps:
    """numpy arrays, on the CPU."""

    name = "numpy"
    float64, float32 = np.float64, np.float32

    def device(self, device) -> str:
        return "cpu"

    def device_of(self, x) -> str:
        return "cpu"

    def empty_bytes(self, n: int, pinned: bool = False) -> np.ndarray:
        return np.empty(n, dtype=np.uint8)

    def zeros(self, shape, dtype, device=None) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)

    def view(self, buf: np.ndarray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """Bytes ``buf`` seen as safetensors ``dtype`` of ``shape`` (fp8: decoded to fp32, a copy)."""
        if dtype in _FP8:
            return fp8_table(dtype)[buf].reshape(shape)
        return buf.view(NUMPY_DTYPES[dtype]).reshape(shape)

    def values(self, x: np.ndarray) -> np.ndarray:
        """``x`` as floats of its own precision (bf16 bits widened to fp32, others as they are)."""
        return self.f32(x) if x.dtype == np.uint16 else x

    def f32(self, x: np.ndarray) -> np.ndarray:
        if x.dtype == np.uint16:   # bf16 bits
            return (x.astype(np.uint32) << 16).view(np.float32)
        return x.astype(np.float32, copy=False)

    def f64(self, x: np.ndarray) -> np.ndarray:
        return self.f32(x).astype(np.float64) if x.dtype == np.uint16 else x.astype(np.float64, copy=False)

    def copy_into(self, dst: np.ndarray, src: np.ndarray) -> None:
        """``dst[...] = src`` converted to ``dst``'s dtype (exactly, for floats into fp32)."""
        if src.dtype == np.uint16:
            np.left_shift(src, 16, out=dst.view(np.uint32), dtype=np.uint32)
        else:
            dst[...] = src

    def promotes(self, x: np.ndarray) -> bool:
        """Mixes with an fp32 operand exactly without a conversion first."""
        return x.dtype in (np.float16, np.float32)

    def swap12(self, x: np.ndarray) -> np.ndarray:
        return x.swapaxes(1, 2)

    def sub(self, x, y, out) -> None:
        np.subtract(x, y, out=out)

    def mul(self, x, y, out) -> None:
        np.multiply(x, y, out=out)

    def ones(self, n: int, like: np.ndarray) -> np.ndarray:
        return np.ones(n, dtype=like.dtype)

    def arange(self, start: int, stop: int, like: np.ndarray) -> np.ndarray:
        return np.arange(start, stop)

    def repeat(self, x: np.ndarray, n: int, axis: int) -> np.ndarray:
        return np.repeat(x, n, axis=axis)

    def where(self, cond, x, y):
        return np.where(cond, x, y)

    def clamp(self, x, lo=None, hi=None):
        return np.clip(x, lo, hi)

    def isfinite(self, x):
        return np.isfinite(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def sum(self, x, axis: int):
        return x.sum(axis=axis)

    def norm2(self, x: np.ndarray) -> float:
        """``‖x‖²`` of a 1-D fp64 array."""
        return float(np.dot(x, x))

    def to(self, x, device):
        return x

    def numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def c_contiguous(self, x: np.ndarray) -> bool:
        return x.flags.c_contiguous

    def data_ptr(self, x: np.ndarray) -> int:
        return x.ctypes.data


class TorchOps:
    """torch tensors, on any device (imported on first use)."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        self.t = torch
        self.float64, self.float32 = torch.float64, torch.float32
        self._dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                        "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
                        "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                        "BOOL": torch.bool}

    def device(self, device):
        return self.t.device(str(device))

    def device_of(self, x):
        return x.device

    # Devices are always named: a notebook's torch.set_default_device("cuda") must not move
    # read buffers (preadv fills host memory) or accumulators.
    def empty_bytes(self, n: int, pinned: bool = False):
        return self.t.empty(n, dtype=self.t.uint8, device="cpu", pin_memory=pinned)

    def zeros(self, shape, dtype, device=None):
        return self.t.zeros(shape, dtype=dtype, device="cpu" if device is None else str(device))

    def view(self, buf, dtype: str, shape: tuple[int, ...]):
        return buf.view(self._dtypes[dtype]).view(*shape) if shape else buf.view(self._dtypes[dtype]).reshape(())

    def f32(self, x):
        return x.float()

    def f64(self, x):
        return x.double()

    def copy_into(self, dst, src) -> None:
        dst.copy_(src)

    def promotes(self, x) -> bool:
        return x.dtype in (self.t.bfloat16, self.t.float16, self.t.float32)

    def swap12(self, x):
        return x.transpose(1, 2)

    def sub(self, x, y, out) -> None:
        self.t.sub(x, y, out=out)

    def mul(self, x, y, out) -> None:
        self.t.mul(x, y, out=out)

    def ones(self, n: int, like):
        return self.t.ones(n, dtype=like.dtype, device=like.device)

    def arange(self, start: int, stop: int, like):
        return self.t.arange(start, stop, device=like.device)

    def repeat(self, x, n: int, axis: int):
        return x.repeat_interleave(n, dim=axis)

    def where(self, cond, x, y):
        return self.t.where(cond, x, y)

    def clamp(self, x, lo=None, hi=None):
        return x.clamp(lo, hi)

    def isfinite(self, x):
        return x.isfinite()

    def sqrt(self, x):
        return x.sqrt()

    def sum(self, x, axis: int):
        return x.sum(dim=axis)

    def norm2(self, x) -> float:
        """``‖x‖²`` of a 1-D fp64 tensor (vector_norm is several times faster than x.dot(x) on CPU)."""
        return float(self.t.linalg.vector_norm(x).square())

    def to(self, x, device):
        return x.to(str(device))

    def numpy(self, x):
        """On the host as numpy (bf16 as its uint16 bits, as ``NumpyOps`` holds it)."""
        x = x.detach().cpu()
        return x.view(self.t.int16).numpy().view(np.uint16) if x.dtype == self.t.bfloat16 else x.numpy()

    def from_numpy(self, x: np.ndarray):
        """A tensor sharing ``x``'s memory (uint16 bits as bf16)."""
        t = self.t.from_numpy(x)
        return t.view(self.t.bfloat16) if x.dtype == np.uint16 else t

    def c_contiguous(self, x) -> bool:
        return x.device.type == "cpu" and x.is_contiguous()

    def data_ptr(self, x) -> int:
        return x.data_ptr()


NUMPY = NumpyOps()


def ieee():
    """A context in which numpy, like torch, lets NaN/Inf propagate without warnings (the engine
    counts them as nonfinite channels); a fresh one per use: numpy's is not re-entrant."""
    return np.errstate(all="ignore")


@functools.cache
def torch_ops() -> TorchOps:
    return TorchOps()


def ops_for(device) -> NumpyOps | TorchOps:
    """numpy for the device name ``"cpu"`` (what ``runtime.resolve_device`` gives), torch for CUDA
    and for a ``torch.device`` (a caller that holds torch tensors, on CPU too)."""
    return NUMPY if isinstance(device, str) and device == "cpu" else torch_ops()


def ops_of(x) -> NumpyOps | TorchOps:
    """The ops of ``x``'s kind: numpy for an ndarray, else torch (already imported, then)."""
    return NUMPY if isinstance(x, np.ndarray) else torch_ops()
