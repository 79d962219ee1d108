"""Model ids (``org/model``) resolved through the local Hugging Face cache, offline.

huggingface_hub keeps a model as ``<cache>/models--<org>--<model>/`` with ``refs/<revision>``
holding a commit hash and ``snapshots/<hash>/`` the files (symlinks into ``blobs/``). The cache
is ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
``~/.cache/huggingface/hub``. Nothing is downloaded: an id that is not in the cache is an error
naming the id and the cache searched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InputError

# What huggingface_hub accepts as a repo id: [namespace/]name of letters, digits, '-', '_', '.'.
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
REVISION = "main"


def looks_like_repo_id(text: str) -> bool:
    return bool(REPO_ID.match(text)) and ".." not in text and not text.endswith(".safetensors")


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def resolve_repo_id(repo_id: str) -> Path:
    """The snapshot directory of ``repo_id`` at ``refs/main`` in the local cache."""
    cache = hub_cache()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    if not repo.is_dir():
        raise InputError(f"{repo_id}: no such file or directory, nor a model in the Hugging Face cache {cache} "
                         "(nothing is downloaded: fetch it first, e.g. `huggingface-cli download "
                         f"{repo_id}`, or give the model's directory)")
    ref = repo / "refs" / REVISION
    try:
        commit = ref.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise InputError(f"{repo_id}: the Hugging Face cache {repo} has no readable refs/{REVISION}; "
                         "give the snapshot directory itself") from None
    snapshot = repo / "snapshots" / commit
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit) or not snapshot.is_dir():
        raise InputError(f"{repo_id}: refs/{REVISION} of {repo} points at no snapshot ({commit[:64]!r})")
    return snapshot
