"""All-or-nothing file writes: a temp file beside the target, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InputError
from .text import ERRORS


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if ``path`` cannot be written."""
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError(f"{p}: is a directory, expected a file name")
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"{p}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise InputError(f"{p}: not writable")
    except OSError as e:   # ENAMETOOLONG, EACCES on a parent, ELOOP, ...
        raise InputError(f"{p}: cannot write here ({e.strerror or e})") from None
    return p


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` or leave ``path`` as it was. Text is UTF-8, with characters it
    cannot encode (lone surrogates from undecodable file names) escaped as in ``outputs.text``."""
    p = check_writable(path)
    raw = data.encode("utf-8", ERRORS) if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except OSError as e:   # ENOSPC, EDQUOT, EIO: the user's filesystem, and the old file is intact
        raise InputError(f"{p}: cannot write ({e.strerror or e}); the file was left as it was") from None
    finally:   # includes KeyboardInterrupt and SIGTERM: never leave the temp file behind
        if tmp is not None and os.path.lexists(tmp):
            Path(tmp).unlink(missing_ok=True)
