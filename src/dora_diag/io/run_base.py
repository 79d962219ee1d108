"""The base model of a run given alone: ``base_model_name_or_path`` of its adapters, as a local
path or a model id in the local Hugging Face cache (``hub_cache``); nothing is downloaded."""

from __future__ import annotations

import os

from ..errors import InputError
from .checkpoint import adapter_base_id
from .hub_cache import looks_like_repo_id, resolve_repo_id
from .runs import expand_run, parse_spec
from .sources import is_any_adapter


def base_of_run(spec: str | os.PathLike) -> str | None:
    """The base directory of run ``[LABEL=]PATH`` (an adapter, or a run directory of adapter
    checkpoints), or None when it holds no adapter (a model or a model id: nothing to resolve).

    Raises ``InputError`` when the adapters name no base, name different bases, or name one
    that is neither a local path nor a model in the cache (the message names the id and the
    cache searched)."""
    path = parse_spec(spec)[1]
    if not os.path.exists(path) and looks_like_repo_id(path):
        return None   # a model id: a base (``open_checkpoint`` finds it in the cache)
    checkpoints = [c.path for c in expand_run(spec).checkpoints]
    adapters = [c for c in checkpoints if is_any_adapter(c)]
    if not adapters and checkpoints != [path]:
        raise InputError(f"{path}: a run of full checkpoints has no base to look up; give the base first: "
                         "dora-diag check BASE RUN")
    if not adapters:
        return None
    ids = {adapter_base_id(c) for c in adapters}
    if None in ids:
        raise InputError(f"{path}: the adapter does not name its base model (no base_model_name_or_path in "
                         "adapter_config.json); give the base first: dora-diag check BASE RUN")
    if len(ids) > 1:
        raise InputError(f"{path}: its checkpoints name different base models ({', '.join(sorted(ids))}); "
                         "give the base first: dora-diag check BASE RUN")
    (base,) = ids
    if os.path.exists(base):
        return base
    if looks_like_repo_id(base):
        return str(resolve_repo_id(base))
    raise InputError(f"{path}: its base model {base!r} (base_model_name_or_path) is neither an existing path nor "
                     "a model id; give the base first: dora-diag check BASE RUN")
