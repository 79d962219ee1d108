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
from .analysis.analysis import Analysis
from .analysis.compare import compare
from .analysis.check import check

__all__ = ["Analysis", "InputError", "UnsupportedError", "check", "compare", "__version__"]
