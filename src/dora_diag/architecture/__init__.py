"""Architecture knowledge kept as data: layer containers, Conv1D orientation, fused projections, renames."""

from .naming import Place, TensorName, match_names, module_namer
from .registry import FusedSpec, fused_groups, is_transposed

__all__ = ["FusedSpec", "Place", "TensorName", "fused_groups", "is_transposed", "match_names", "module_namer"]
