"""A local Hugging Face cache laid out as huggingface_hub lays out a download (test helper,
importable as ``hub_helpers``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_model(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """``repo_id`` in ``cache`` as huggingface_hub stores a download: content-addressed blobs,
    a snapshot of relative symlinks to them, and refs/main naming the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        os.symlink(f"../../blobs/{blob}", snapshot / name)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
