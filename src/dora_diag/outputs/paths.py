"""Output paths checked against the inputs before any work: an output never replaces a file
that is read, never lands inside a checkpoint being read, and no two outputs are one file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .atomic import check_writable


def _real(path: str | os.PathLike) -> Path:
    """``path`` with every symlink resolved, as far as it exists (errors are the caller's)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError) as e:
        raise InputError(f"{os.fspath(path)}: cannot resolve the path ({getattr(e, 'strerror', None) or e})") from None


# Files read from beside an input given as a single file: its config, the adapter config of an
# adapter_model.safetensors, the step and log of a checkpoint.
SIBLINGS_READ = ("config.json", "adapter_config.json", "trainer_state.json", "metrics.jsonl",
                 "model.safetensors.index.json")


def _protected(inputs: list[str]) -> list[tuple[Path, bool]]:
    """What an output must not be, or (flag True) be inside of: each input directory (a
    checkpoint or run, with all it holds), each input file, and the files read beside it."""
    out = []
    for raw in inputs:
        real = _real(raw)
        if real.is_dir():
            out.append((real, True))
        else:
            out.extend([(real, False), *((real.parent / name, False) for name in SIBLINGS_READ)])
    return out


def check_outputs(outputs: dict[str, str | None], inputs: list[str]) -> None:
    """Refuse, before any work, outputs (``{"--csv": path, ...}``) that collide with each other
    or with the ``inputs`` (as given: ``[LABEL=]PATH``), then check that each is writable."""
    from ..io.runs import parse_spec

    given = {option: path for option, path in outputs.items() if path}
    seen: dict[Path, str] = {}
    protected = _protected([parse_spec(spec)[1] for spec in inputs])
    for option, path in given.items():
        real = _real(path)
        if real in seen:
            raise InputError(f"{path}: {seen[real]} and {option} name the same file; give each output its own path")
        seen[real] = option
        inside = next((p for p, tree in protected if real == p or (tree and p in real.parents)), None)
        if inside is not None:
            raise InputError(f"{path}: {option} would write into the input {inside}; write outputs outside the "
                             "checkpoints being read")
        check_writable(path)
