"""dora-diag: DoRA's weight decomposition analysis for any fine-tune.

Notebook entry points::

    import dora_diag
    a = dora_diag.compare("base/", "ft-run/")
    a.table            # one row per tensor per checkpoint
    a.stats(by="module")
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dora-diag")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"

from .errors import InputError, UnsupportedError

# Imported on first use: torch and pandas take seconds to import, which `dora-diag --help`
# should not pay.
_LAZY = {"Analysis": ".analysis.analysis", "compare": ".analysis.compare", "check": ".analysis.check",
         "verify": ".analysis.verify"}

__all__ = ["Analysis", "InputError", "UnsupportedError", "check", "compare", "verify", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
